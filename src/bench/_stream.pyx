# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The stream-copy bandwidth probe of the benchmark report (cnorm.bench): the ceiling that every
kernel's speed is judged against."""
from cython.parallel cimport prange
from libc.string cimport memcpy


def stream_copy(const float[::1] src, float[::1] dst, int n_threads):
    """``dst[:] = src`` in parallel blocks of 256 KB on ``n_threads`` threads."""
    cdef Py_ssize_t n = src.shape[0], b, B = 1 << 16
    cdef Py_ssize_t nb = (n + B - 1) // B
    if n == 0:
        return
    with nogil:
        for b in prange(nb, schedule="static", num_threads=n_threads):
            memcpy(&dst[b * B], &src[b * B], min(B, n - b * B) * sizeof(float))


def stream_read(const unsigned long long[::1] src, int n_threads):
    """Reads ``src`` in parallel blocks of 256 KB on ``n_threads`` threads (an xor of all
    words, so nothing is written): the read-bandwidth probe. Returns the xor."""
    cdef Py_ssize_t n = src.shape[0], i
    cdef unsigned long long acc = 0
    with nogil:
        for i in prange(n, schedule="static", num_threads=n_threads):
            acc ^= src[i]
    return acc
