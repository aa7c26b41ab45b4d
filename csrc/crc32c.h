/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by the log entry frame.
 *
 * Chaining follows zlib.crc32 and raftkv.storage._pycodec.crc32c: start with 0, pass the
 * previous result to continue, so crc(a + b) == rk_crc32c(rk_crc32c(0, a), b).
 *
 * Two implementations, chosen once at load time: the SSE4.2 crc32 instruction over 8-byte
 * words (three interleaved streams on long buffers) when the CPU has it, else a portable
 * slicing-by-8 table. Both give identical results; rk_crc32c_impl() names the active one.
 * All functions are thread-safe and need no initialisation call.
 */
#ifndef RK_CRC32C_H
#define RK_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC32C of buf[0..len), continuing from crc (0 to start). */
uint32_t rk_crc32c(uint32_t crc, const void *buf, size_t len);

/* "sse4.2" or "slice8": the implementation rk_crc32c uses. */
const char *rk_crc32c_impl(void);

/* The portable table implementation, always available (for tests and benchmarks). */
uint32_t rk_crc32c_slice8(uint32_t crc, const void *buf, size_t len);

/* 1 if the CPU supports SSE4.2 (rk_crc32c_sse42 may be called), else 0. */
int rk_crc32c_sse42_available(void);

/* The hardware implementation; only valid when rk_crc32c_sse42_available(). */
uint32_t rk_crc32c_sse42(uint32_t crc, const void *buf, size_t len);

#endif /* RK_CRC32C_H */
