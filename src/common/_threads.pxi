# Thread counts. Every kernel takes ``n_threads`` (the caller reads it at call time, so
# OMP_NUM_THREADS, threadpoolctl and cnorm.set_num_threads all apply) and caps it here by the
# work; results never depend on it (see _chunks.pxi).
cdef extern from "cnorm_omp.h" nogil:
    int cn_max_threads()
    void cn_set_max_threads(int n)
    int cn_openmp_enabled()
    int cn_cpu_supports(const char *target)


def max_threads():
    """The thread count a kernel called now from this thread would use (omp_get_max_threads)."""
    return cn_max_threads()


def set_max_threads(int n):
    """Set OpenMP's thread count for the calling thread (omp_set_num_threads)."""
    cn_set_max_threads(n)


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(cn_openmp_enabled())


def cpu_supports(str target):
    """True when this CPU (and OS) can run code built for ``target``: baseline, avx2, avx512."""
    return bool(cn_cpu_supports(target.encode()))


cdef inline int _threads(Py_ssize_t work, Py_ssize_t units, int n_threads) noexcept nogil:
    """Threads for ``work`` values split in ``units`` independent parts: 1 below PARALLEL_MIN,
    never more than the parts, never more than asked for."""
    if work < PARALLEL_MIN or units < 2 or n_threads < 2:
        return 1
    return <int>units if n_threads > units else n_threads
