/* B+tree: an ordered map from byte-string keys to uint64 handles.
 *
 * Fixed fanout (RK_BT_MAX keys per node), every leaf at the same depth, leaves linked both
 * ways, and each internal node keeps the key count of every child subtree so rank and count
 * are O(log n). Keys order as memcmp, a proper prefix first (the order of Python bytes).
 *
 * Keys are borrowed, never copied: the tree keeps the caller's pointer, in leaves and as
 * separators in internal nodes. The caller must keep a key's bytes alive and unchanged from
 * the rk_bt_insert that added it until the rk_bt_delete that removed it (or rk_bt_free).
 * Separators always point at the bytes of a live key, which deletion maintains; so only node
 * splits allocate, and those reserve their nodes first: a failed allocation (RK_BT_NOMEM)
 * leaves the tree unchanged. Not thread-safe: the caller serialises all access.
 *
 * raftkv.storage._cbtree wraps it: handles index a slot table of Python objects.
 */
#ifndef RK_BTREE_H
#define RK_BTREE_H

#include <stddef.h>
#include <stdint.h>

#define RK_BT_MAX 64             /* keys per node, at most */
#define RK_BT_MIN (RK_BT_MAX / 4) /* keys per node other than the root, at least */

enum {
    RK_BT_NOMEM = -1,
    RK_BT_EXISTS = 0,   /* rk_bt_insert: the key was present; tree unchanged */
    RK_BT_INSERTED = 1, /* rk_bt_insert: the key was added */
};

typedef struct rk_btree rk_btree;

rk_btree *rk_bt_new(void); /* NULL when out of memory */
void rk_bt_free(rk_btree *t);
size_t rk_bt_size(const rk_btree *t);
size_t rk_bt_leaves(const rk_btree *t); /* leaf nodes in use (memory diagnostics) */

/* 1 and *handle if key is present, else 0. */
int rk_bt_find(const rk_btree *t, const void *key, size_t len, uint64_t *handle);

/* Add key -> handle. If key is present, returns RK_BT_EXISTS with its handle in *existing
 * (the stored key pointer and handle are kept). */
int rk_bt_insert(rk_btree *t, const void *key, size_t len, uint64_t handle, uint64_t *existing);

/* Remove key: 1 with its handle in *handle, or 0 if absent. Rebalances; never allocates. */
int rk_bt_delete(rk_btree *t, const void *key, size_t len, uint64_t *handle);

/* Number of keys strictly less than key. */
size_t rk_bt_rank(const rk_btree *t, const void *key, size_t len);

/* Keys k with start <= k < end (has_end 0: no upper bound), as in rk_bt_rank. */
size_t rk_bt_count(const rk_btree *t, const void *start, size_t slen, const void *end,
                   size_t elen, int has_end);

/* Write the handles of the first `max` keys of [start, end) in order (reverse: the last `max`
 * in descending order) to out; returns how many were written (at most max, and at most the
 * rk_bt_count of the range). */
size_t rk_bt_collect(const rk_btree *t, const void *start, size_t slen, const void *end,
                     size_t elen, int has_end, int reverse, uint64_t *out, size_t max);

/* Walk every invariant (order, bounds, fill factors, depth, subtree counts, leaf links,
 * separators pointing at live keys, cached prefixes). Returns the number of keys, or -1 with
 * a description of the first violation in err[0..errlen). */
int64_t rk_bt_check(const rk_btree *t, char *err, size_t errlen);

#endif /* RK_BTREE_H */
