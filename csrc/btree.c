/* B+tree with borrowed keys and counted subtrees. See btree.h for the contract.
 *
 * Layout: a node holds n keys in three parallel arrays: the borrowed pointer, the length, and
 * pfx, the 8 bytes of the key that follow the node's common prefix (skip bytes shared by every
 * key of the node), big-endian and zero-padded. Binary search compares a probe with the
 * common prefix once per node (one read of key 0), then compares pfx words, reading a key's
 * bytes only on a tie. Keys with long shared prefixes (/registry/pods/...) thus cost about
 * one key read per level instead of one per comparison. A leaf adds one handle per key and its
 * neighbours; an internal node adds n + 1 children and the key count of each child's subtree.
 * Arrays have one spare slot so a node may overflow by one before it splits.
 *
 * Internal node x routes key k to child i = (number of separators <= k): child i holds keys in
 * [sep[i-1], sep[i]). Every separator points at the bytes of a live key of equal value (it
 * starts as a copy of a leaf key's pointer, and deletion replaces any separator that points
 * at the key it removes), so a separator never dangles.
 */
#include "btree.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"

typedef struct bkey {
    uint64_t pfx;
    const uint8_t *ptr;
    size_t len;
} bkey;

typedef struct node {
    int n;
    int leaf;
    size_t skip; /* every key shares its first skip bytes with key 0 (0 when n < 2) */
    uint64_t pfx[RK_BT_MAX + 1];
    const uint8_t *kp[RK_BT_MAX + 1];
    size_t kl[RK_BT_MAX + 1];
} node;

typedef struct leaf {
    node h;
    uint64_t val[RK_BT_MAX + 1];
    struct leaf *prev, *next;
} leaf;

typedef struct inner {
    node h;
    node *child[RK_BT_MAX + 2];
    uint64_t cnt[RK_BT_MAX + 2];
} inner;

struct rk_btree {
    node *root;
    size_t size;
    int height; /* internal levels above the leaves */
    leaf *spare_leaves;   /* reserved nodes, linked through next */
    inner *spare_inners;  /* reserved nodes, linked through child[0] */
    int n_spare_leaves, n_spare_inners;
};

#define LEAF(x) ((leaf *)(x))
#define INNER(x) ((inner *)(x))

static inline uint64_t prefix_of(const uint8_t *p, size_t len) {
    uint64_t v = 0;
    size_t m = len < 8 ? len : 8;
    for (size_t i = 0; i < m; i++) {
        v |= (uint64_t)p[i] << (56 - 8 * i);
    }
    return v;
}

/* The pfx word of a key in a node with the given skip (the key is at least skip long). */
static inline uint64_t prefix_at(const uint8_t *p, size_t len, size_t skip) {
    return prefix_of(p + skip, len - skip);
}

static inline bkey make_key(const void *p, size_t len) {
    bkey k = {0, (const uint8_t *)p, len};
    return k;
}

/* Full comparison of two byte strings, memcmp order, a proper prefix first. */
static int cmp_bytes(const uint8_t *a, size_t la, const uint8_t *b, size_t lb) {
    size_t m = la < lb ? la : lb;
    int r = m > 0 ? memcmp(a, b, m) : 0;
    if (r != 0) {
        return r;
    }
    return la < lb ? -1 : (la > lb ? 1 : 0);
}

/* Compare the probe k with x's common prefix: -1 (k is below every key of x), 1 (above every
 * key), or 0 with k->pfx set to k's pfx word for x. */
static inline int probe_node(const node *x, bkey *k) {
    size_t s = x->skip;
    if (s > 0) {
        size_t m = k->len < s ? k->len : s;
        int r = memcmp(k->ptr, x->kp[0], m);
        if (r != 0) {
            return r < 0 ? -1 : 1;
        }
        if (k->len < s) {
            return -1;
        }
    }
    k->pfx = prefix_at(k->ptr, k->len, s);
    return 0;
}

/* Compare slot i of x with a probe that shares x's common prefix (probe_node returned 0). */
static inline int cmp_slot(const node *x, int i, const bkey *k) {
    if (x->pfx[i] != k->pfx) {
        return x->pfx[i] < k->pfx ? -1 : 1;
    }
    size_t s = x->skip + 8;
    size_t la = x->kl[i], lb = k->len, m = la < lb ? la : lb;
    if (m > s) {
        int r = memcmp(x->kp[i] + s, k->ptr + s, m - s);
        if (r != 0) {
            return r;
        }
    }
    return la < lb ? -1 : (la > lb ? 1 : 0);
}

/* First slot whose key is >= k (upper == 0) or > k (upper == 1); with eq, whether that slot's
 * key equals k. upper and eq's nullness are constants at every call site, so the comparison
 * compiles to < or <= and the equality test disappears where it is not wanted. */
static inline int bound(const node *x, const bkey *probe, int upper, int *eq) {
    bkey k = *probe;
    int pre = probe_node(x, &k);
    if (eq != NULL) {
        *eq = 0;
    }
    if (pre != 0) {
        return pre < 0 ? 0 : x->n;
    }
    int lo = 0, hi = x->n;
    while (lo < hi) {
        int mid = (lo + hi) >> 1;
        if (cmp_slot(x, mid, &k) < upper) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (eq != NULL) {
        *eq = lo < x->n && cmp_slot(x, lo, &k) == 0;
    }
    return lo;
}

/* First slot whose key is >= k; *eq tells whether that key equals k. */
static inline int lower_bound_eq(const node *x, const bkey *probe, int *eq) {
    return bound(x, probe, 0, eq);
}

static inline int lower_bound(const node *x, const bkey *probe) {
    return bound(x, probe, 0, NULL);
}

/* First slot whose key is > k: the child to descend into. */
static inline int upper_bound(const node *x, const bkey *probe) {
    return bound(x, probe, 1, NULL);
}

/* Recompute x's common prefix and every pfx word (after keys came from other nodes). */
static void rebuild_prefix(node *x) {
    size_t s = 0;
    if (x->n >= 2) {
        /* Keys are sorted, so the prefix shared by all is the one of the first and last. */
        const uint8_t *a = x->kp[0], *b = x->kp[x->n - 1];
        size_t m = x->kl[0] < x->kl[x->n - 1] ? x->kl[0] : x->kl[x->n - 1];
        while (s < m && a[s] == b[s]) {
            s++;
        }
    }
    x->skip = s;
    for (int i = 0; i < x->n; i++) {
        x->pfx[i] = prefix_at(x->kp[i], x->kl[i], s);
    }
}

/* Store key (ptr, len) in slot i of x (already counted in x->n), keeping the common prefix
 * right: if the key does not share it, the prefix shrinks and every pfx word is recomputed. */
static void put_key(node *x, int i, const uint8_t *ptr, size_t len) {
    x->kp[i] = ptr;
    x->kl[i] = len;
    size_t s = x->skip;
    if (s > 0) {
        int ref = i == 0 ? 1 : 0;
        if (x->n < 2 || len < s || memcmp(ptr, x->kp[ref], s) != 0) {
            rebuild_prefix(x);
            return;
        }
    }
    x->pfx[i] = prefix_at(ptr, len, s);
}

/* Copy the key of src's slot j into dst's slot i (already counted in dst->n). */
static inline void set_slot(node *dst, int i, const node *src, int j) {
    put_key(dst, i, src->kp[j], src->kl[j]);
}

/* Move count key slots of x from i to j (overlap allowed). */
static inline void move_slots(node *x, int j, int i, int count) {
    memmove(&x->pfx[j], &x->pfx[i], (size_t)count * sizeof x->pfx[0]);
    memmove(&x->kp[j], &x->kp[i], (size_t)count * sizeof x->kp[0]);
    memmove(&x->kl[j], &x->kl[i], (size_t)count * sizeof x->kl[0]);
}

static inline void copy_slots(node *dst, int j, const node *src, int i, int count) {
    memcpy(&dst->pfx[j], &src->pfx[i], (size_t)count * sizeof dst->pfx[0]);
    memcpy(&dst->kp[j], &src->kp[i], (size_t)count * sizeof dst->kp[0]);
    memcpy(&dst->kl[j], &src->kl[i], (size_t)count * sizeof dst->kl[0]);
}

static uint64_t subtree_count(const node *x) {
    if (x->leaf) {
        return (uint64_t)x->n;
    }
    uint64_t total = 0;
    for (int i = 0; i <= x->n; i++) {
        total += INNER(x)->cnt[i];
    }
    return total;
}

/* ---- node allocation: splits take reserved nodes, so an insert fails before it changes */

static leaf *take_leaf(rk_btree *t) {
    leaf *l = t->spare_leaves;
    RK_ASSERT(l != NULL);
    t->spare_leaves = l->next;
    t->n_spare_leaves--;
    memset(l, 0, sizeof *l);
    l->h.leaf = 1;
    return l;
}

static inner *take_inner(rk_btree *t) {
    inner *x = t->spare_inners;
    RK_ASSERT(x != NULL);
    t->spare_inners = (inner *)x->child[0];
    t->n_spare_inners--;
    memset(x, 0, sizeof *x);
    return x;
}

/* Enough nodes for the worst insert: one leaf and one internal node per level plus a root. */
static int reserve(rk_btree *t) {
    while (t->n_spare_leaves < 1) {
        leaf *l = malloc(sizeof *l);
        if (l == NULL) {
            return RK_BT_NOMEM;
        }
        l->next = t->spare_leaves;
        t->spare_leaves = l;
        t->n_spare_leaves++;
    }
    while (t->n_spare_inners < t->height + 1) {
        inner *x = malloc(sizeof *x);
        if (x == NULL) {
            return RK_BT_NOMEM;
        }
        x->child[0] = (node *)t->spare_inners;
        t->spare_inners = x;
        t->n_spare_inners++;
    }
    return 0;
}

rk_btree *rk_bt_new(void) {
    rk_btree *t = calloc(1, sizeof *t);
    if (t == NULL) {
        return NULL;
    }
    if (reserve(t) != 0) {
        rk_bt_free(t);
        return NULL;
    }
    t->root = &take_leaf(t)->h;
    return t;
}

static void free_node(node *x) {
    if (!x->leaf) {
        for (int i = 0; i <= x->n; i++) {
            free_node(INNER(x)->child[i]);
        }
    }
    free(x);
}

void rk_bt_free(rk_btree *t) {
    if (t == NULL) {
        return;
    }
    if (t->root != NULL) {
        free_node(t->root);
    }
    while (t->spare_leaves != NULL) {
        leaf *l = t->spare_leaves;
        t->spare_leaves = l->next;
        free(l);
    }
    while (t->spare_inners != NULL) {
        inner *x = t->spare_inners;
        t->spare_inners = (inner *)x->child[0];
        free(x);
    }
    free(t);
}

size_t rk_bt_size(const rk_btree *t) {
    return t->size;
}

size_t rk_bt_leaves(const rk_btree *t) {
    const node *x = t->root;
    while (!x->leaf) {
        x = INNER(x)->child[0];
    }
    size_t n = 0;
    for (const leaf *l = LEAF(x); l != NULL; l = l->next) {
        n++;
    }
    return n;
}

static const leaf *find_leaf(const rk_btree *t, const bkey *k) {
    const node *x = t->root;
    while (!x->leaf) {
        x = INNER(x)->child[upper_bound(x, k)];
    }
    return LEAF(x);
}

int rk_bt_find(const rk_btree *t, const void *key, size_t len, uint64_t *handle) {
    bkey k = make_key(key, len);
    const leaf *l = find_leaf(t, &k);
    int eq, i = lower_bound_eq(&l->h, &k, &eq);
    if (eq) {
        *handle = l->val[i];
        return 1;
    }
    return 0;
}

/* ---- insert */

typedef struct split {
    bkey sep;   /* the first key of the right node's subtree */
    node *right;
} split;

/* Split an overfull leaf in two. Half and half, except when the key just added is the last of
 * the last leaf (keys arriving in ascending order, as a bulk load's often do): then the left
 * leaf keeps all but RK_BT_MIN keys, so leaves filled by appends end ~3/4 full instead of
 * half full; the new right leaf goes on filling with the appends that follow. */
static void split_leaf(rk_btree *t, leaf *l, int appended, split *sp) {
    leaf *r = take_leaf(t);
    int keep = appended ? l->h.n - RK_BT_MIN : (l->h.n + 1) / 2, move = l->h.n - keep;
    copy_slots(&r->h, 0, &l->h, keep, move);
    memcpy(r->val, &l->val[keep], (size_t)move * sizeof r->val[0]);
    r->h.n = move;
    l->h.n = keep;
    rebuild_prefix(&r->h);
    r->prev = l;
    r->next = l->next;
    if (l->next != NULL) {
        l->next->prev = r;
    }
    l->next = r;
    sp->sep.ptr = r->h.kp[0];
    sp->sep.len = r->h.kl[0];
    sp->right = &r->h;
}

static void split_inner(rk_btree *t, inner *x, split *sp) {
    inner *r = take_inner(t);
    int keep = x->h.n / 2;          /* keys left in x */
    int move = x->h.n - keep - 1;   /* keys moved to r; the one between goes up */
    sp->sep.ptr = x->h.kp[keep];
    sp->sep.len = x->h.kl[keep];
    copy_slots(&r->h, 0, &x->h, keep + 1, move);
    memcpy(r->child, &x->child[keep + 1], (size_t)(move + 1) * sizeof r->child[0]);
    memcpy(r->cnt, &x->cnt[keep + 1], (size_t)(move + 1) * sizeof r->cnt[0]);
    r->h.n = move;
    x->h.n = keep;
    rebuild_prefix(&r->h);
    sp->right = &r->h;
}

static int insert_rec(rk_btree *t, node *x, const bkey *k, uint64_t handle, uint64_t *existing,
                      split *sp, int *did_split) {
    if (x->leaf) {
        leaf *l = LEAF(x);
        int eq, i = lower_bound_eq(x, k, &eq);
        if (eq) {
            *existing = l->val[i];
            return RK_BT_EXISTS;
        }
        move_slots(x, i + 1, i, x->n - i);
        memmove(&l->val[i + 1], &l->val[i], (size_t)(x->n - i) * sizeof l->val[0]);
        l->val[i] = handle;
        x->n++;
        put_key(x, i, k->ptr, k->len);
        if (x->n > RK_BT_MAX) {
            split_leaf(t, l, i == x->n - 1 && l->next == NULL, sp);
            *did_split = 1;
        }
        return RK_BT_INSERTED;
    }
    inner *in = INNER(x);
    int i = upper_bound(x, k);
    split child_sp;
    int child_split = 0;
    int r = insert_rec(t, in->child[i], k, handle, existing, &child_sp, &child_split);
    if (r != RK_BT_INSERTED) {
        return r;
    }
    if (!child_split) {
        in->cnt[i]++;
        return r;
    }
    move_slots(x, i + 1, i, x->n - i);
    memmove(&in->child[i + 2], &in->child[i + 1], (size_t)(x->n - i) * sizeof in->child[0]);
    memmove(&in->cnt[i + 2], &in->cnt[i + 1], (size_t)(x->n - i) * sizeof in->cnt[0]);
    in->child[i + 1] = child_sp.right;
    in->cnt[i + 1] = subtree_count(child_sp.right);
    in->cnt[i] = in->cnt[i] + 1 - in->cnt[i + 1];
    x->n++;
    put_key(x, i, child_sp.sep.ptr, child_sp.sep.len);
    if (x->n > RK_BT_MAX) {
        split_inner(t, in, sp);
        *did_split = 1;
    }
    return r;
}

int rk_bt_insert(rk_btree *t, const void *key, size_t len, uint64_t handle, uint64_t *existing) {
    if (reserve(t) != 0) {
        return RK_BT_NOMEM;
    }
    bkey k = make_key(key, len);
    split sp;
    int did_split = 0;
    int r = insert_rec(t, t->root, &k, handle, existing, &sp, &did_split);
    if (r != RK_BT_INSERTED) {
        return r;
    }
    t->size++;
    if (did_split) {
        inner *root = take_inner(t);
        root->h.n = 1;
        put_key(&root->h, 0, sp.sep.ptr, sp.sep.len);
        root->child[0] = t->root;
        root->child[1] = sp.right;
        root->cnt[1] = subtree_count(sp.right);
        root->cnt[0] = t->size - root->cnt[1];
        t->root = &root->h;
        t->height++;
    }
    return RK_BT_INSERTED;
}

/* ---- delete */

static void release_leaf(rk_btree *t, leaf *l) {
    if (t->n_spare_leaves < 4) {
        l->next = t->spare_leaves;
        t->spare_leaves = l;
        t->n_spare_leaves++;
    } else {
        free(l);
    }
}

static void release_inner(rk_btree *t, inner *x) {
    if (t->n_spare_inners < t->height + 4) {
        x->child[0] = (node *)t->spare_inners;
        t->spare_inners = x;
        t->n_spare_inners++;
    } else {
        free(x);
    }
}


/* Move the last key of child i-1 to the front of child i. */
static void borrow_left(inner *p, int i) {
    node *c = p->child[i], *s = p->child[i - 1];
    move_slots(c, 1, 0, c->n);
    uint64_t moved;
    c->n++;
    s->n--;
    if (c->leaf) {
        memmove(&LEAF(c)->val[1], &LEAF(c)->val[0], (size_t)(c->n - 1) * sizeof(uint64_t));
        set_slot(c, 0, s, s->n);
        LEAF(c)->val[0] = LEAF(s)->val[s->n];
        set_slot(&p->h, i - 1, c, 0);
        moved = 1;
    } else {
        inner *ci = INNER(c), *si = INNER(s);
        memmove(&ci->child[1], &ci->child[0], (size_t)c->n * sizeof ci->child[0]);
        memmove(&ci->cnt[1], &ci->cnt[0], (size_t)c->n * sizeof ci->cnt[0]);
        set_slot(c, 0, &p->h, i - 1);
        ci->child[0] = si->child[s->n + 1];
        ci->cnt[0] = si->cnt[s->n + 1];
        set_slot(&p->h, i - 1, s, s->n);
        moved = ci->cnt[0];
    }
    p->cnt[i - 1] -= moved;
    p->cnt[i] += moved;
}

/* Move the first key of child i+1 to the end of child i. */
static void borrow_right(inner *p, int i) {
    node *c = p->child[i], *s = p->child[i + 1];
    uint64_t moved;
    c->n++;
    if (c->leaf) {
        set_slot(c, c->n - 1, s, 0);
        LEAF(c)->val[c->n - 1] = LEAF(s)->val[0];
        move_slots(s, 0, 1, s->n - 1);
        memmove(&LEAF(s)->val[0], &LEAF(s)->val[1], (size_t)(s->n - 1) * sizeof(uint64_t));
        s->n--;
        set_slot(&p->h, i, s, 0);
        moved = 1;
    } else {
        inner *ci = INNER(c), *si = INNER(s);
        set_slot(c, c->n - 1, &p->h, i);
        ci->child[c->n] = si->child[0];
        ci->cnt[c->n] = si->cnt[0];
        moved = si->cnt[0];
        set_slot(&p->h, i, s, 0);
        move_slots(s, 0, 1, s->n - 1);
        memmove(&si->child[0], &si->child[1], (size_t)s->n * sizeof si->child[0]);
        memmove(&si->cnt[0], &si->cnt[1], (size_t)s->n * sizeof si->cnt[0]);
        s->n--;
    }
    p->cnt[i] += moved;
    p->cnt[i + 1] -= moved;
}

/* Merge child j+1 into child j and drop separator j. */
static void merge(rk_btree *t, inner *p, int j) {
    node *a = p->child[j], *b = p->child[j + 1];
    if (a->leaf) {
        RK_ASSERT(a->n + b->n <= RK_BT_MAX);
        copy_slots(a, a->n, b, 0, b->n);
        memcpy(&LEAF(a)->val[a->n], LEAF(b)->val, (size_t)b->n * sizeof(uint64_t));
        a->n += b->n;
        rebuild_prefix(a);
        LEAF(a)->next = LEAF(b)->next;
        if (LEAF(b)->next != NULL) {
            LEAF(b)->next->prev = LEAF(a);
        }
        release_leaf(t, LEAF(b));
    } else {
        inner *ai = INNER(a), *bi = INNER(b);
        RK_ASSERT(a->n + 1 + b->n <= RK_BT_MAX);
        a->kp[a->n] = p->h.kp[j];
        a->kl[a->n] = p->h.kl[j];
        copy_slots(a, a->n + 1, b, 0, b->n);
        memcpy(&ai->child[a->n + 1], bi->child, (size_t)(b->n + 1) * sizeof ai->child[0]);
        memcpy(&ai->cnt[a->n + 1], bi->cnt, (size_t)(b->n + 1) * sizeof ai->cnt[0]);
        a->n += 1 + b->n;
        rebuild_prefix(a);
        release_inner(t, bi);
    }
    p->cnt[j] += p->cnt[j + 1];
    move_slots(&p->h, j, j + 1, p->h.n - j - 1);
    memmove(&p->child[j + 1], &p->child[j + 2], (size_t)(p->h.n - j - 1) * sizeof p->child[0]);
    memmove(&p->cnt[j + 1], &p->cnt[j + 2], (size_t)(p->h.n - j - 1) * sizeof p->cnt[0]);
    p->h.n--;
}

static void rebalance(rk_btree *t, inner *p, int i) {
    if (i > 0 && p->child[i - 1]->n > RK_BT_MIN) {
        borrow_left(p, i);
    } else if (i < p->h.n && p->child[i + 1]->n > RK_BT_MIN) {
        borrow_right(p, i);
    } else if (i > 0) {
        merge(t, p, i - 1);
    } else {
        merge(t, p, i);
    }
}

typedef struct gone {
    const uint8_t *ptr;
    size_t len;
} gone;

static int delete_rec(rk_btree *t, node *x, const bkey *k, uint64_t *handle, gone *g) {
    if (x->leaf) {
        int eq, i = lower_bound_eq(x, k, &eq);
        if (!eq) {
            return 0;
        }
        *handle = LEAF(x)->val[i];
        g->ptr = x->kp[i];
        g->len = x->kl[i];
        move_slots(x, i, i + 1, x->n - i - 1);
        memmove(&LEAF(x)->val[i], &LEAF(x)->val[i + 1], (size_t)(x->n - i - 1) * 8);
        x->n--;
        if (x->n == 0) {
            x->skip = 0; /* probe_node reads key 0 when skip > 0 */
        }
        return 1;
    }
    inner *in = INNER(x);
    int i = upper_bound(x, k);
    if (!delete_rec(t, in->child[i], k, handle, g)) {
        return 0;
    }
    in->cnt[i]--;
    if (i > 0 && x->kp[i - 1] == g->ptr && x->kl[i - 1] == g->len) {
        /* The separator borrowed the removed key: make it the smallest key of child i, a
         * live key that still separates child i-1 from child i (child i is not empty). */
        const node *m = in->child[i];
        while (!m->leaf) {
            m = INNER(m)->child[0];
        }
        RK_ASSERT(m->n > 0);
        put_key(x, i - 1, m->kp[0], m->kl[0]);
    }
    if (in->child[i]->n < RK_BT_MIN) {
        rebalance(t, in, i);
    }
    return 1;
}

int rk_bt_delete(rk_btree *t, const void *key, size_t len, uint64_t *handle) {
    bkey k = make_key(key, len);
    gone g = {NULL, 0};
    if (!delete_rec(t, t->root, &k, handle, &g)) {
        return 0;
    }
    t->size--;
    if (!t->root->leaf && t->root->n == 0) {
        inner *old = INNER(t->root);
        t->root = old->child[0];
        t->height--;
        release_inner(t, old);
    }
    return 1;
}

/* ---- order statistics and ranges */

size_t rk_bt_rank(const rk_btree *t, const void *key, size_t len) {
    bkey k = make_key(key, len);
    const node *x = t->root;
    size_t rank = 0;
    while (!x->leaf) {
        int i = upper_bound(x, &k);
        for (int j = 0; j < i; j++) {
            rank += INNER(x)->cnt[j];
        }
        x = INNER(x)->child[i];
    }
    return rank + (size_t)lower_bound(x, &k);
}

size_t rk_bt_count(const rk_btree *t, const void *start, size_t slen, const void *end,
                   size_t elen, int has_end) {
    size_t lo = rk_bt_rank(t, start, slen);
    size_t hi = has_end ? rk_bt_rank(t, end, elen) : t->size;
    return hi > lo ? hi - lo : 0;
}

/* The leaf and slot of the first key >= k; the leaf is NULL when there is none. */
static const leaf *seek_ge(const rk_btree *t, const bkey *k, int *pos) {
    const leaf *l = find_leaf(t, k);
    int i = lower_bound(&l->h, k);
    if (i == l->h.n) {
        l = l->next;
        i = 0;
    }
    *pos = i;
    return l;
}

static const leaf *last_leaf(const rk_btree *t) {
    const node *x = t->root;
    while (!x->leaf) {
        x = INNER(x)->child[x->n];
    }
    return LEAF(x);
}

size_t rk_bt_collect(const rk_btree *t, const void *start, size_t slen, const void *end,
                     size_t elen, int has_end, int reverse, uint64_t *out, size_t max) {
    size_t avail = rk_bt_count(t, start, slen, end, elen, has_end);
    size_t want = max < avail ? max : avail, got = 0;
    const leaf *l;
    int i;
    if (want == 0) {
        return 0;
    }
    if (!reverse) {
        bkey k = make_key(start, slen);
        for (l = seek_ge(t, &k, &i); got < want; i = 0, l = l->next) {
            RK_ASSERT(l != NULL);
            for (; i < l->h.n && got < want; i++) {
                out[got++] = l->val[i];
            }
        }
        return got;
    }
    if (has_end) {
        bkey k = make_key(end, elen);
        l = seek_ge(t, &k, &i);
        if (l == NULL) {
            l = last_leaf(t);
            i = l->h.n;
        }
    } else {
        l = last_leaf(t);
        i = l->h.n;
    }
    /* (l, i) is one past the last key < end; walk backwards. */
    while (got < want) {
        RK_ASSERT(l != NULL);
        if (i == 0) {
            l = l->prev;
            i = l != NULL ? l->h.n : 0;
            continue;
        }
        out[got++] = l->val[--i];
    }
    return got;
}

/* ---- invariant walk */

typedef struct checker {
    const rk_btree *t;
    char *err;
    size_t errlen;
    int leaf_depth;
    const leaf *prev_leaf;
} checker;

static int64_t fail(checker *c, const char *what, const node *x, int i) {
    if (c->errlen > 0) {
        snprintf(c->err, c->errlen, "btree: %s (node %p, slot %d, %d keys)", what,
                 (const void *)x, i, x != NULL ? x->n : -1);
    }
    return -1;
}

static inline bkey slot_key(const node *x, int i) {
    return make_key(x->kp[i], x->kl[i]);
}

static int64_t check_keys(checker *c, const node *x, const bkey *lo, const bkey *hi) {
    int is_root = x == c->t->root;
    if (x->n > RK_BT_MAX || x->n < 0) {
        return fail(c, "node overfull", x, x->n);
    }
    if (!is_root && x->n < RK_BT_MIN) {
        return fail(c, "node below the minimum fill", x, x->n);
    }
    if (is_root && !x->leaf && x->n < 1) {
        return fail(c, "internal root without a separator", x, 0);
    }
    if (x->n == 0 && x->skip != 0) {
        return fail(c, "empty node with a common prefix", x, 0);
    }
    for (int i = 0; i < x->n; i++) {
        const uint8_t *p = x->kp[i];
        size_t len = x->kl[i];
        if (len < x->skip || memcmp(p, x->kp[0], x->skip) != 0) {
            return fail(c, "key does not share the node's common prefix", x, i);
        }
        if (x->pfx[i] != prefix_at(p, len, x->skip)) {
            return fail(c, "cached prefix word differs from the key bytes", x, i);
        }
        if (i > 0 && cmp_bytes(x->kp[i - 1], x->kl[i - 1], p, len) >= 0) {
            return fail(c, "keys not strictly increasing", x, i);
        }
        if (lo != NULL && cmp_bytes(p, len, lo->ptr, lo->len) < 0) {
            return fail(c, "key below the lower bound of its subtree", x, i);
        }
        if (hi != NULL && cmp_bytes(p, len, hi->ptr, hi->len) >= 0) {
            return fail(c, "key not below the upper bound of its subtree", x, i);
        }
    }
    return 0;
}

static int sep_is_live(const node *sub, const node *x, int j) {
    bkey k = slot_key(x, j);
    while (!sub->leaf) {
        sub = INNER(sub)->child[upper_bound(sub, &k)];
    }
    int i = lower_bound(sub, &k);
    return i < sub->n && sub->kp[i] == k.ptr && sub->kl[i] == k.len;
}

static int64_t check_node(checker *c, const node *x, int depth, const bkey *lo,
                          const bkey *hi) {
    if (check_keys(c, x, lo, hi) < 0) {
        return -1;
    }
    if (x->leaf) {
        const leaf *l = LEAF(x);
        if (c->leaf_depth < 0) {
            c->leaf_depth = depth;
        } else if (depth != c->leaf_depth) {
            return fail(c, "leaves at different depths", x, 0);
        }
        if (l->prev != c->prev_leaf || (c->prev_leaf != NULL && c->prev_leaf->next != l)) {
            return fail(c, "leaf links out of order", x, 0);
        }
        c->prev_leaf = l;
        return x->n;
    }
    const inner *in = INNER(x);
    int64_t total = 0;
    for (int j = 0; j <= x->n; j++) {
        bkey clo, chi;
        if (j > 0) {
            clo = slot_key(x, j - 1);
        }
        if (j < x->n) {
            chi = slot_key(x, j);
        }
        int64_t n = check_node(c, in->child[j], depth + 1, j > 0 ? &clo : lo,
                               j < x->n ? &chi : hi);
        if (n < 0) {
            return -1;
        }
        if ((uint64_t)n != in->cnt[j]) {
            return fail(c, "subtree count differs from its keys", x, j);
        }
        if (j < x->n && !sep_is_live(in->child[j + 1], x, j)) {
            return fail(c, "separator does not point at a live key", x, j);
        }
        total += n;
    }
    return total;
}

int64_t rk_bt_check(const rk_btree *t, char *err, size_t errlen) {
    checker c = {t, err, errlen, -1, NULL};
    if (errlen > 0) {
        err[0] = '\0';
    }
    int64_t n = check_node(&c, t->root, 0, NULL, NULL);
    if (n < 0) {
        return -1;
    }
    if (c.prev_leaf == NULL || c.prev_leaf->next != NULL) {
        return fail(&c, "last leaf has a successor", t->root, 0);
    }
    if (c.leaf_depth != t->height) {
        return fail(&c, "height differs from the leaf depth", t->root, c.leaf_depth);
    }
    if ((uint64_t)n != t->size) {
        return fail(&c, "size differs from the number of keys", t->root, 0);
    }
    return n;
}
