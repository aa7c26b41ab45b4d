from libc.stdint cimport int64_t, uint32_t, uint64_t


ctypedef struct rk_hist:
    uint64_t main  # main revision
    uint64_t low   # sub << 1 | tombstone: the entry is main << 33 | low


cdef class KeyIndex:
    cdef public int64_t create
    cdef public int64_t version
    cdef public int64_t lease
    cdef uint32_t n      # entries held
    cdef uint32_t cap    # entries `more` has room for; 0: the history is `one`
    cdef rk_hist one
    cdef rk_hist *more

    cdef rk_hist *hist(self)
    cdef int push_c(self, uint64_t main, uint64_t low) except -1
    cdef object last_c(self)
    cdef uint32_t _first_after_main(self, uint64_t main)
