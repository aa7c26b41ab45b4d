/* Log entry frame: the authority for the on-disk / in-buffer record layout.
 *
 * Little-endian, one frame per Raft entry:
 *
 *     len   u32   bytes after the crc field: RK_FRAME_BODY_MIN (17) + payload length
 *     crc   u32   CRC32C (see crc32c.h) of exactly those len bytes
 *     term  u64
 *     index u64
 *     type  u8
 *     payload
 *
 * A buffer is a concatenation of frames. raftkv.storage._pycodec is the pure-Python twin and
 * must agree byte for byte.
 */
#ifndef RK_ENTRY_CODEC_H
#define RK_ENTRY_CODEC_H

#include <stddef.h>
#include <stdint.h>

#define RK_FRAME_HEADER_BYTES 25 /* len(4) + crc(4) + term(8) + index(8) + type(1) */
#define RK_FRAME_BODY_MIN 17     /* term + index + type: the smallest legal len */
#define RK_FRAME_PAYLOAD_MAX ((size_t)UINT32_MAX - RK_FRAME_BODY_MIN)

/* Status codes of the decoder; the order is the order of the checks on one frame. */
enum {
    RK_FRAME_OK = 0,
    RK_FRAME_TRUNCATED = 1, /* fewer than RK_FRAME_HEADER_BYTES bytes left */
    RK_FRAME_BAD_LEN = 2,   /* len < RK_FRAME_BODY_MIN or beyond the end of the buffer */
    RK_FRAME_BAD_CRC = 3,   /* CRC32C of the len bytes differs from the crc field */
};

typedef struct rk_entry {
    uint64_t term;
    uint64_t index;
    uint8_t type;
    const uint8_t *payload;
    size_t payload_len; /* at most RK_FRAME_PAYLOAD_MAX */
} rk_entry;

/* Bytes needed to frame a payload of payload_len bytes. */
static inline size_t rk_frame_size(size_t payload_len) {
    return RK_FRAME_HEADER_BYTES + payload_len;
}

/* Write one frame at out (rk_frame_size(e->payload_len) bytes); returns the bytes written. */
size_t rk_encode_entry(uint8_t *out, const rk_entry *e);

/* Write n frames back to back into out[0..cap). Returns the bytes written, or 0 with nothing
 * promised about out when cap is too small (n == 0 also returns 0). */
size_t rk_encode_entries(uint8_t *out, size_t cap, const rk_entry *entries, size_t n);

/* Check and parse the frame at buf[off..n). On RK_FRAME_OK fills *e (payload points into buf)
 * and sets *next to the offset of the following frame. *bad_len receives the len field when
 * the status is RK_FRAME_BAD_LEN. */
int rk_decode_entry(const uint8_t *buf, size_t n, size_t off, rk_entry *e, size_t *next,
                    uint32_t *bad_len);

/* As rk_decode_entry without the CRC check: for a buffer rk_verify_entries already accepted.
 * The length checks stay, so a buffer changed in between can never cause an overread. */
int rk_parse_entry(const uint8_t *buf, size_t n, size_t off, rk_entry *e, size_t *next,
                   uint32_t *bad_len);

/* Verify every frame of buf[0..n) (lengths and CRCs). Returns the status of the first bad
 * frame, or RK_FRAME_OK. *good receives the number of good frames before it, *bad_off its
 * offset (n when all are good), *last_index the index field of the last good frame (0 if
 * none) and *bad_len the len field when the status is RK_FRAME_BAD_LEN. */
int rk_verify_entries(const uint8_t *buf, size_t n, size_t *good, size_t *bad_off,
                      uint64_t *last_index, uint32_t *bad_len);

#endif /* RK_ENTRY_CODEC_H */
