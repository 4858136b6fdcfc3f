# The chunk plan: the determinism contract. Statistics of an (outer, C, inner) array are made of
# per-chunk partials whose bounds depend on the shape only, each computed by one function
# whatever thread runs it, then merged in chunk order: bit-identical results for any thread
# count. Three layouts, chosen by the shape:
#   * plane (inner >= GATHER): chunk k of a channel is the flat range [k*CHUNK, (k+1)*CHUNK) of
#     its (outer, inner) plane; units of work are (channel, chunk) pairs;
#   * block (1 < inner < GATHER): chunk k is a block of whole outer rows, every channel;
#   * rows (inner == 1: (N, C), channels-last): chunk k is a block of rows of the (outer, C)
#     matrix, every channel, summed across channels.


cdef inline Py_ssize_t _block_rows(Py_ssize_t outer, Py_ssize_t C,
                                   Py_ssize_t inner) noexcept nogil:
    """Outer rows per chunk in the block and rows layouts. Rows: about ROW_CHUNK values of all
    channels. Short rows: about CHUNK values of one channel, and at least 8 chunks so that the
    statistics spread over threads."""
    if inner == 1:
        return max(1, ROW_CHUNK // C) if C > 0 else 1
    return max(1, min(CHUNK // inner, (outer + 7) // 8))


cdef inline Py_ssize_t _nchunks(Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner) noexcept nogil:
    if C == 0 or outer == 0 or inner == 0:
        return 0
    if inner >= GATHER:
        return (outer * inner + CHUNK - 1) // CHUNK
    return (outer + _block_rows(outer, C, inner) - 1) // _block_rows(outer, C, inner)


cdef inline Py_ssize_t _chunk_start(Py_ssize_t k, Py_ssize_t outer, Py_ssize_t C,
                                    Py_ssize_t inner) noexcept nogil:
    """Start of chunk k in a channel's flat (outer, inner) range."""
    return k * CHUNK if inner >= GATHER else k * _block_rows(outer, C, inner) * inner


cdef inline Py_ssize_t _chunk_end(Py_ssize_t k, Py_ssize_t outer, Py_ssize_t C,
                                  Py_ssize_t inner) noexcept nogil:
    if inner >= GATHER:
        return min((k + 1) * CHUNK, outer * inner)
    return min((k + 1) * _block_rows(outer, C, inner), outer) * inner
