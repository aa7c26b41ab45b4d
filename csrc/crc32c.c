/* CRC32C: SSE4.2 instruction with runtime detection, slicing-by-8 fallback. See crc32c.h.
 *
 * Internally the CRC "state" is the register without pre/post inversion: the public value v
 * maps to state v ^ 0xFFFFFFFF and back. The state update is linear over GF(2), which is what
 * lets three independent streams be combined: state(A || B) = shift(state(A), |B|) ^
 * state0(B), where shift appends |B| zero bytes (a 4 x 256 table per fixed length) and
 * state0(B) is B's state started from 0.
 */
#include "crc32c.h"

#include <string.h>

#include "rk_assert.h"

#if defined(__x86_64__) || defined(__i386__)
#define RK_HAVE_X86 1
#include <nmmintrin.h>
#else
#define RK_HAVE_X86 0
#endif

#define POLY 0x82F63B78u
#define LONG_BLOCK 8192 /* bytes per stream in the long 3-way loop */
#define SHORT_BLOCK 256 /* bytes per stream in the short 3-way loop */

static uint32_t tab8[8][256];        /* slicing-by-8 tables; tab8[0] is the bytewise table */
static uint32_t shift_long[4][256];  /* append LONG_BLOCK zero bytes to a state */
static uint32_t shift_short[4][256]; /* append SHORT_BLOCK zero bytes to a state */
static int have_sse42;
static int tables_ready;

static inline uint64_t load64le(const uint8_t *p) {
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
           (uint64_t)p[7] << 56;
}

/* a * b modulo the (reflected) polynomial; a must be non-zero. As zlib's multmodp. */
static uint32_t multmodp(uint32_t a, uint32_t b) {
    uint32_t m = (uint32_t)1 << 31, p = 0;
    RK_ASSERT(a != 0);
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0) {
                break;
            }
        }
        m >>= 1;
        b = (b & 1) ? (b >> 1) ^ POLY : b >> 1;
    }
    return p;
}

static void make_shift_table(uint32_t table[4][256], size_t zeros) {
    /* op = x^(8 * zeros) mod P, obtained by running the state of "1" (bit 31 when reflected)
     * through `zeros` zero bytes; shifting any state is then a multiplication by op. */
    uint32_t op = (uint32_t)1 << 31;
    for (size_t i = 0; i < zeros; i++) {
        op = tab8[0][op & 0xFF] ^ (op >> 8);
    }
    for (int k = 0; k < 4; k++) {
        for (uint32_t b = 0; b < 256; b++) {
            table[k][b] = multmodp(op, b << (8 * k));
        }
    }
}

__attribute__((constructor)) static void crc32c_init(void) {
    if (tables_ready) {
        return;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        }
        tab8[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        for (int k = 1; k < 8; k++) {
            tab8[k][n] = (tab8[k - 1][n] >> 8) ^ tab8[0][tab8[k - 1][n] & 0xFF];
        }
    }
    make_shift_table(shift_long, LONG_BLOCK);
    make_shift_table(shift_short, SHORT_BLOCK);
#if RK_HAVE_X86
    __builtin_cpu_init();
    have_sse42 = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#endif
    tables_ready = 1;
}

static inline uint32_t shift_state(const uint32_t table[4][256], uint32_t s) {
    return table[0][s & 0xFF] ^ table[1][(s >> 8) & 0xFF] ^ table[2][(s >> 16) & 0xFF] ^
           table[3][s >> 24];
}

static uint32_t slice8_state(uint32_t s, const uint8_t *p, size_t len) {
    while (len >= 8) {
        uint64_t w = load64le(p) ^ s;
        s = tab8[7][w & 0xFF] ^ tab8[6][(w >> 8) & 0xFF] ^ tab8[5][(w >> 16) & 0xFF] ^
            tab8[4][(w >> 24) & 0xFF] ^ tab8[3][(w >> 32) & 0xFF] ^ tab8[2][(w >> 40) & 0xFF] ^
            tab8[1][(w >> 48) & 0xFF] ^ tab8[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--) {
        s = tab8[0][(s ^ *p++) & 0xFF] ^ (s >> 8);
    }
    return s;
}

uint32_t rk_crc32c_slice8(uint32_t crc, const void *buf, size_t len) {
    if (!tables_ready) {
        crc32c_init();
    }
    return slice8_state(crc ^ 0xFFFFFFFFu, (const uint8_t *)buf, len) ^ 0xFFFFFFFFu;
}

#if RK_HAVE_X86
__attribute__((target("sse4.2"))) static uint32_t sse42_three_way(
    uint32_t s, const uint8_t **pp, size_t *lenp, size_t block,
    const uint32_t table[4][256]) {
    const uint8_t *p = *pp;
    size_t len = *lenp;
    while (len >= 3 * block) {
        uint64_t c0 = s, c1 = 0, c2 = 0;
        const uint8_t *end = p + block;
        do {
            c0 = _mm_crc32_u64(c0, load64le(p));
            c1 = _mm_crc32_u64(c1, load64le(p + block));
            c2 = _mm_crc32_u64(c2, load64le(p + 2 * block));
            p += 8;
        } while (p < end);
        s = shift_state(table, (uint32_t)c0) ^ (uint32_t)c1;
        s = shift_state(table, s) ^ (uint32_t)c2;
        p += 2 * block;
        len -= 3 * block;
    }
    *pp = p;
    *lenp = len;
    return s;
}

__attribute__((target("sse4.2"))) uint32_t rk_crc32c_sse42(uint32_t crc, const void *buf,
                                                           size_t len) {
    const uint8_t *p = (const uint8_t *)buf;
    uint64_t s = crc ^ 0xFFFFFFFFu;
    if (!tables_ready) {
        crc32c_init();
    }
    RK_ASSERT(have_sse42);
    /* Align to 8 bytes so the word loads never straddle a cache line needlessly. */
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        s = _mm_crc32_u8((uint32_t)s, *p++);
        len--;
    }
    s = sse42_three_way((uint32_t)s, &p, &len, LONG_BLOCK, shift_long);
    s = sse42_three_way((uint32_t)s, &p, &len, SHORT_BLOCK, shift_short);
    while (len >= 8) {
        s = _mm_crc32_u64(s, load64le(p));
        p += 8;
        len -= 8;
    }
    while (len > 0) {
        s = _mm_crc32_u8((uint32_t)s, *p++);
        len--;
    }
    return (uint32_t)s ^ 0xFFFFFFFFu;
}
#else
uint32_t rk_crc32c_sse42(uint32_t crc, const void *buf, size_t len) {
    (void)crc;
    (void)buf;
    (void)len;
    RK_ASSERT(0 && "rk_crc32c_sse42 called on a CPU without SSE4.2");
    return 0;
}
#endif

int rk_crc32c_sse42_available(void) {
    if (!tables_ready) {
        crc32c_init();
    }
    return have_sse42;
}

uint32_t rk_crc32c(uint32_t crc, const void *buf, size_t len) {
    if (!tables_ready) {
        crc32c_init();
    }
    if (have_sse42) {
        return rk_crc32c_sse42(crc, buf, len);
    }
    return rk_crc32c_slice8(crc, buf, len);
}

const char *rk_crc32c_impl(void) {
    return rk_crc32c_sse42_available() ? "sse4.2" : "slice8";
}
