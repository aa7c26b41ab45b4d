/* Always-on assertions for csrc/: unlike assert(3), NDEBUG does not remove them.
 *
 * A failed RK_ASSERT means a broken invariant inside the C hot path (never bad input: inputs
 * are checked and reported through status codes). Continuing would corrupt data, so it prints
 * the location and aborts.
 */
#ifndef RK_ASSERT_H
#define RK_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define RK_ASSERT(cond)                                                                \
    do {                                                                               \
        if (__builtin_expect(!(cond), 0)) {                                            \
            fprintf(stderr, "%s:%d: %s: assertion failed: %s\n", __FILE__, __LINE__,  \
                    __func__, #cond);                                                  \
            abort();                                                                   \
        }                                                                              \
    } while (0)

#endif /* RK_ASSERT_H */
