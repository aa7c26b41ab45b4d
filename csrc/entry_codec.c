/* Log entry frame encoder and verifier. See entry_codec.h for the layout. */
#include "entry_codec.h"

#include <string.h>

#include "crc32c.h"
#include "rk_assert.h"

static inline void put32le(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline void put64le(uint8_t *p, uint64_t v) {
    put32le(p, (uint32_t)v);
    put32le(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t get32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t get64le(const uint8_t *p) {
    return (uint64_t)get32le(p) | (uint64_t)get32le(p + 4) << 32;
}

size_t rk_encode_entry(uint8_t *out, const rk_entry *e) {
    RK_ASSERT(e->payload_len <= RK_FRAME_PAYLOAD_MAX);
    uint32_t body_len = (uint32_t)(RK_FRAME_BODY_MIN + e->payload_len);
    put64le(out + 8, e->term);
    put64le(out + 16, e->index);
    out[24] = e->type;
    if (e->payload_len > 0) {
        memcpy(out + RK_FRAME_HEADER_BYTES, e->payload, e->payload_len);
    }
    put32le(out, body_len);
    put32le(out + 4, rk_crc32c(0, out + 8, body_len));
    return 8 + (size_t)body_len;
}

size_t rk_encode_entries(uint8_t *out, size_t cap, const rk_entry *entries, size_t n) {
    size_t need = 0;
    for (size_t i = 0; i < n; i++) {
        size_t size = rk_frame_size(entries[i].payload_len);
        if (entries[i].payload_len > RK_FRAME_PAYLOAD_MAX || size > cap - need) {
            return 0;
        }
        need += size;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        off += rk_encode_entry(out + off, &entries[i]);
    }
    RK_ASSERT(off == need);
    return off;
}

/* The length checks (and the CRC check when with_crc) of the frame at off, in _pycodec's
 * order. */
static int check_frame(const uint8_t *buf, size_t n, size_t off, uint32_t *len_out,
                       int with_crc) {
    RK_ASSERT(off <= n);
    if (n - off < RK_FRAME_HEADER_BYTES) {
        return RK_FRAME_TRUNCATED;
    }
    uint32_t len = get32le(buf + off);
    *len_out = len;
    if (len < RK_FRAME_BODY_MIN || (size_t)len > n - off - 8) {
        return RK_FRAME_BAD_LEN;
    }
    if (with_crc && rk_crc32c(0, buf + off + 8, len) != get32le(buf + off + 4)) {
        return RK_FRAME_BAD_CRC;
    }
    return RK_FRAME_OK;
}

static int decode_entry(const uint8_t *buf, size_t n, size_t off, rk_entry *e, size_t *next,
                        uint32_t *bad_len, int with_crc) {
    uint32_t len = 0;
    int status = check_frame(buf, n, off, &len, with_crc);
    if (status != RK_FRAME_OK) {
        *bad_len = len;
        return status;
    }
    e->term = get64le(buf + off + 8);
    e->index = get64le(buf + off + 16);
    e->type = buf[off + 24];
    e->payload = buf + off + RK_FRAME_HEADER_BYTES;
    e->payload_len = (size_t)len - RK_FRAME_BODY_MIN;
    *next = off + 8 + (size_t)len;
    return RK_FRAME_OK;
}

int rk_decode_entry(const uint8_t *buf, size_t n, size_t off, rk_entry *e, size_t *next,
                    uint32_t *bad_len) {
    return decode_entry(buf, n, off, e, next, bad_len, 1);
}

int rk_parse_entry(const uint8_t *buf, size_t n, size_t off, rk_entry *e, size_t *next,
                   uint32_t *bad_len) {
    return decode_entry(buf, n, off, e, next, bad_len, 0);
}

int rk_verify_entries(const uint8_t *buf, size_t n, size_t *good, size_t *bad_off,
                      uint64_t *last_index, uint32_t *bad_len) {
    size_t off = 0, count = 0;
    uint64_t last = 0;
    *bad_len = 0;
    while (off < n) {
        uint32_t len = 0;
        int status = check_frame(buf, n, off, &len, 1);
        if (status != RK_FRAME_OK) {
            *good = count;
            *bad_off = off;
            *last_index = last;
            *bad_len = len;
            return status;
        }
        last = get64le(buf + off + 16);
        count++;
        off += 8 + (size_t)len;
    }
    *good = count;
    *bad_off = n;
    *last_index = last;
    return RK_FRAME_OK;
}
