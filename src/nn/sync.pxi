# SyncBatchNorm's steps around its collectives: every rank's rows merged in rank order (the
# same bits on every rank), and the entries of its training step checked in C (as calls.pxi's:
# None where they do not take the call, before anything is written; the layer then takes its
# checked path, which sends the same messages, so ranks on either path work together).


cdef int _merge_rows(const double *rows, Py_ssize_t R, Py_ssize_t stride, Py_ssize_t C,
                     double eps, double *total, double *mean, double *m2,
                     double *invstd) except -1:
    """Chan's merge of R rows ``(count, mean[C], m2[C])``, ``stride`` doubles apart, in row
    order (merge_stats' _merge: an empty row is skipped), into ``total``, ``mean`` and ``m2``;
    then ``invstd = 1 / sqrt(m2 / total + eps)``."""
    cdef Py_ssize_t r, c
    cdef double *part = <double *>malloc((R * (2 * C + 1) + 1) * sizeof(double))
    if part == NULL:
        raise MemoryError()
    total[0] = 0.0
    for r in range(R):  # the layout _merge reads: counts (R), means (R, C), m2 (R, C)
        part[r] = rows[r * stride]
        total[0] += rows[r * stride]
        for c in range(C):
            part[R + r * C + c] = rows[r * stride + 1 + c]
            part[R + R * C + r * C + c] = rows[r * stride + 1 + C + c]
    if C > 0:
        _merge(R, C, part, part + R, part + R + R * C, mean, m2)
    free(part)
    for c in range(C):
        invstd[c] = 1.0 / sqrt(m2[c] / total[0] + eps)
    return 0


cdef void _sync_coefs(const double *rows, Py_ssize_t R, Py_ssize_t stride, Py_ssize_t C,
                      const double *invstd, double count, const double *w, double *k1,
                      double *k2, double *k3) noexcept nogil:
    """backward_apply's coefficients from R rows ``(sum(g)[C], sum(g * (x - mean))[C])``
    added in row order: ``k1 = w * invstd``, ``k2 = -invstd**3 * (w * S2) / count``, ``k3 =
    -invstd * (w * S1) / count``, rounded as NumPy evaluates them left to right (w NULL: 1)."""
    cdef Py_ssize_t r, c
    cdef double s1, s2, wc, v
    for c in range(C):
        s1 = 0.0
        s2 = 0.0
        for r in range(R):
            s1 = s1 + rows[r * stride + c]
            s2 = s2 + rows[r * stride + C + c]
        wc = w[c] if w != NULL else 1.0
        v = invstd[c]
        k1[c] = wc * v
        k2[c] = -v * v * v * (wc * s2) / count
        k3[c] = -v * (wc * s1) / count


def sync_train_begin(object x, int kind, long long ranks, Py_ssize_t C, object weight,
                     object bias, object running_mean, object running_var, object counter,
                     Py_ssize_t head, int n_threads):
    """This rank's part of SyncBatchNorm's training forward, for ``x`` an aligned
    C-contiguous native-order ndarray (N, C, *) of ``kind`` (float32 or float64) of a rank in
    ``ranks``, C > 0, and the parameters, running statistics and ``counter`` as
    bn_forward_call takes them: returns the forward's float64 message ``(0, C, count, mean[C],
    m2[C])`` (no failure, the width, the statistics; zeros for an empty shard), padded with
    zeros to at least ``head`` values; or None."""
    if not _train_args(x, kind, ranks, C, weight, bias, running_mean, running_var, counter):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef Py_ssize_t N = cnp.PyArray_DIM(xa, 0), inner = _inner(xa)
    cdef cnp.npy_intp n = max(head, 3 + 2 * C)
    cdef cnp.ndarray row = cnp.PyArray_ZEROS(1, &n, cnp.NPY_DOUBLE, 0)
    cdef double *m = <double *>cnp.PyArray_DATA(row)
    cdef double *r = m + 2  # (count, mean, m2) after the flag and the width
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef int err = 0
    m[1] = <double>C
    if N * inner == 0:
        return row
    with nogil:
        if kind == cnp.NPY_FLOAT:
            err = _stats(<const float *>xp, N, C, inner, r + 1, r + 1 + C, n_threads,
                         <float *>NULL)
        else:
            err = _stats(<const double *>xp, N, C, inner, r + 1, r + 1 + C, n_threads,
                         <double *>NULL)
    if err:
        raise MemoryError()
    r[0] = <double>(N * inner)
    return row


def sync_train_finish(object x, const double[:, :] rows, object weight, object bias,
                      object running_mean, object running_var, object counter, double eps,
                      double factor, object out, int n_threads):
    """The rest of the forward whose part sync_train_begin made: every rank's rows (its
    ``(count, mean, m2)``, in rank order) merged as sync_stats merges them, ``x`` normalized
    into ``out`` (None: a new array; else an array laid out as x, writable), the running
    statistics moved by ``factor`` and ``counter`` incremented. Returns ``(y, stats,
    count)``, stats the (3, C) float64 mean, m2 and invstd of the union, or None (nothing
    written) where the arguments are not as sync_train_begin took them."""
    if not cnp.PyArray_CheckExact(x):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int kind = cnp.PyArray_TYPE(xa), nd = cnp.PyArray_NDIM(xa)
    cdef Py_ssize_t C = cnp.PyArray_DIM(xa, 1) if nd >= 2 else 0, c
    if ((kind != cnp.NPY_FLOAT and kind != cnp.NPY_DOUBLE) or C == 0 or not _like(x, xa)
            or rows.shape[1] != 1 + 2 * C or rows.shape[0] == 0 or rows.strides[1] != 8
            or not (_vector(weight, kind, C, False) and _vector(bias, kind, C, False)
                    and _vector(running_mean, kind, C, True)
                    and _vector(running_var, kind, C, True))
            or (out is not None and not _same(out, xa, True))):
        return None
    cdef Py_ssize_t N = cnp.PyArray_DIM(xa, 0), inner = _inner(xa)
    cdef cnp.ndarray y = (<cnp.ndarray>out if out is not None
                          else cnp.PyArray_EMPTY(nd, cnp.PyArray_DIMS(xa), kind, 0))
    cdef cnp.npy_intp sdims[2]
    sdims[0], sdims[1] = 3, C
    cdef cnp.ndarray stats = cnp.PyArray_EMPTY(2, sdims, cnp.NPY_DOUBLE, 0)
    cdef double *mean = <double *>cnp.PyArray_DATA(stats)
    cdef double total
    _merge_rows(&rows[0, 0], rows.shape[0], rows.strides[0] // 8, C, eps, &total, mean,
                mean + C, mean + 2 * C)
    cdef void *coef = malloc(4 * C * sizeof(double))
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *yp = cnp.PyArray_DATA(y)
    cdef void *wp = _data(weight)
    cdef void *bp = _data(bias)
    if coef == NULL:
        raise MemoryError()
    with nogil:  # normalize's coefficients: scale = invstd * w, shift = bias, in double
        for c in range(C):
            if kind == cnp.NPY_FLOAT:
                _set_coef(<float *>coef, C, c, inner == 1, 4, mean[c],
                          mean[2 * C + c] * (<const float *>wp)[c] if wp != NULL
                          else mean[2 * C + c],
                          (<const float *>bp)[c] if bp != NULL else 0.0, 0.0)
            else:
                _set_coef(<double *>coef, C, c, inner == 1, 4, mean[c],
                          mean[2 * C + c] * (<const double *>wp)[c] if wp != NULL
                          else mean[2 * C + c],
                          (<const double *>bp)[c] if bp != NULL else 0.0, 0.0)
        if N * inner > 0:
            if kind == cnp.NPY_FLOAT:
                _apply(<const float *>xp, <const float *>NULL, <float *>yp, N, C, inner,
                       <const float *>coef, 0, C, n_threads, NULL, ACT_NONE, 0.0)
            else:
                _apply(<const double *>xp, <const double *>NULL, <double *>yp, N, C, inner,
                       <const double *>coef, 0, C, n_threads, NULL, ACT_NONE, 0.0)
    free(coef)
    if kind == cnp.NPY_FLOAT:
        _move_running(<float *>_data(running_mean), 1, <float *>_data(running_var), 1, mean,
                      mean + C, C, total - 1.0, factor)
    else:
        _move_running(<double *>_data(running_mean), 1, <double *>_data(running_var), 1, mean,
                      mean + C, C, total - 1.0, factor)
    if counter is not None:
        (<long long *>cnp.PyArray_DATA(<cnp.ndarray>counter))[0] += 1
    return y, stats, total


def sync_grad_begin(object x, object dy, object mean, int n_threads):
    """This rank's part of SyncBatchNorm's backward, for ``x`` the input sync_train_finish
    normalized, ``dy`` an aligned C-contiguous native-order ndarray of its type and shape,
    ``mean`` its float64 means: the backward's float64 message ``(0, sum(dy)[C], sum(dy * (x -
    mean))[C])`` (no failure, the sums; zeros for an empty shard), or None."""
    if not (cnp.PyArray_CheckExact(x) and cnp.PyArray_CheckExact(dy)):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int kind = cnp.PyArray_TYPE(xa), nd = cnp.PyArray_NDIM(xa)
    cdef Py_ssize_t C = cnp.PyArray_DIM(xa, 1) if nd >= 2 else 0
    if ((kind != cnp.NPY_FLOAT and kind != cnp.NPY_DOUBLE) or C == 0 or not _like(x, xa)
            or not _same(dy, xa, False) or not _vector(mean, cnp.NPY_DOUBLE, C, False)
            or mean is None):
        return None
    cdef Py_ssize_t N = cnp.PyArray_DIM(xa, 0), inner = _inner(xa)
    cdef cnp.npy_intp n = 1 + 2 * C
    cdef cnp.ndarray row = cnp.PyArray_ZEROS(1, &n, cnp.NPY_DOUBLE, 0)
    cdef double *r = <double *>cnp.PyArray_DATA(row) + 1
    cdef const double *mp = <const double *>cnp.PyArray_DATA(<cnp.ndarray>mean)
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *gp = cnp.PyArray_DATA(<cnp.ndarray>dy)
    cdef int err = 0
    if N * inner == 0:
        return row
    with nogil:
        if kind == cnp.NPY_FLOAT:
            err = _sums(<const float *>xp, <const float *>gp, N, C, inner, mp, r, r + C,
                        n_threads, <float *>NULL)
        else:
            err = _sums(<const double *>xp, <const double *>gp, N, C, inner, mp, r, r + C,
                        n_threads, <double *>NULL)
    if err:
        raise MemoryError()
    return row


def sync_grad_finish(object x, object dy, const double[:, :] rows, object local,
                     object mean, object invstd, double count, object weight, object out,
                     int n_threads):
    """The rest of the backward whose part sync_grad_begin made (``local``, this rank's row;
    ``rows``, every rank's, in rank order): the coefficients as sync_coefficients makes them
    (``count`` the union's), then ``dx = dy * k1 + ((x - mean) * k2 + k3)`` into ``out``
    (None: a new array; else writable, laid out as x). Returns ``(dx, grad_weight,
    grad_bias)``, this rank's parameter gradients ``invstd * sum(dy * (x - mean))`` and
    ``sum(dy)`` rounded to x's type; or None (nothing written) where the arguments are not
    as sync_grad_begin and sync_train_finish took and gave them."""
    if not (cnp.PyArray_CheckExact(x) and cnp.PyArray_CheckExact(dy)):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef int kind = cnp.PyArray_TYPE(xa), nd = cnp.PyArray_NDIM(xa)
    cdef Py_ssize_t C = cnp.PyArray_DIM(xa, 1) if nd >= 2 else 0, c
    if ((kind != cnp.NPY_FLOAT and kind != cnp.NPY_DOUBLE) or C == 0 or not _like(x, xa)
            or not _same(dy, xa, False) or rows.shape[1] != 2 * C or rows.shape[0] == 0
            or rows.strides[1] != 8
            or not (_vector(mean, cnp.NPY_DOUBLE, C, False) and mean is not None
                    and _vector(invstd, cnp.NPY_DOUBLE, C, False) and invstd is not None
                    and _vector(local, cnp.NPY_DOUBLE, 2 * C, False) and local is not None
                    and _vector(weight, kind, C, False))
            or (out is not None and not _same(out, xa, True))):
        return None
    cdef Py_ssize_t N = cnp.PyArray_DIM(xa, 0), inner = _inner(xa)
    cdef cnp.ndarray dx = (<cnp.ndarray>out if out is not None
                           else cnp.PyArray_EMPTY(nd, cnp.PyArray_DIMS(xa), kind, 0))
    cdef cnp.npy_intp sdims[1]
    sdims[0] = C
    cdef cnp.ndarray gw = cnp.PyArray_EMPTY(1, sdims, kind, 0)
    cdef cnp.ndarray gb = cnp.PyArray_EMPTY(1, sdims, kind, 0)
    cdef const double *mp = <const double *>cnp.PyArray_DATA(<cnp.ndarray>mean)
    cdef const double *ip = <const double *>cnp.PyArray_DATA(<cnp.ndarray>invstd)
    cdef const double *lp = <const double *>cnp.PyArray_DATA(<cnp.ndarray>local)
    cdef double *k = <double *>malloc((3 * C + 1) * sizeof(double))
    cdef double *w64 = <double *>malloc((C + 1) * sizeof(double))
    cdef void *coef = malloc(5 * C * sizeof(double))
    cdef void *wp = _data(weight)
    cdef void *xp = cnp.PyArray_DATA(xa)
    cdef void *gp = cnp.PyArray_DATA(<cnp.ndarray>dy)
    cdef void *dp = cnp.PyArray_DATA(dx)
    cdef void *gwp = cnp.PyArray_DATA(gw)
    cdef void *gbp = cnp.PyArray_DATA(gb)
    if k == NULL or w64 == NULL or coef == NULL:
        free(k)
        free(w64)
        free(coef)
        raise MemoryError()
    with nogil:
        for c in range(C):
            if wp != NULL:
                w64[c] = ((<const float *>wp)[c] if kind == cnp.NPY_FLOAT
                          else (<const double *>wp)[c])
        _sync_coefs(&rows[0, 0], rows.shape[0], rows.strides[0] // 8, C, ip, count,
                    w64 if wp != NULL else NULL, k, k + C, k + 2 * C)
        for c in range(C):
            if kind == cnp.NPY_FLOAT:
                _set_coef(<float *>coef, C, c, inner == 1, 5, mp[c], k[c], k[C + c],
                          k[2 * C + c])
                (<float *>gwp)[c] = <float>(ip[c] * lp[C + c])
                (<float *>gbp)[c] = <float>lp[c]
            else:
                _set_coef(<double *>coef, C, c, inner == 1, 5, mp[c], k[c], k[C + c],
                          k[2 * C + c])
                (<double *>gwp)[c] = ip[c] * lp[C + c]
                (<double *>gbp)[c] = lp[c]
        if N * inner > 0:
            if kind == cnp.NPY_FLOAT:
                _apply(<const float *>xp, <const float *>gp, <float *>dp, N, C, inner,
                       <const float *>coef, 0, C, n_threads, NULL, ACT_NONE, 0.0)
            else:
                _apply(<const double *>xp, <const double *>gp, <double *>dp, N, C, inner,
                       <const double *>coef, 0, C, n_threads, NULL, ACT_NONE, 0.0)
    free(k)
    free(w64)
    free(coef)
    return dx, gw, gb


cdef inline cnp.ndarray _gather(object comm, object message):
    """Every rank's ``message`` (a 1-D float64 array of one length on every rank), a
    (comm.size, length) array in rank order, by one Allgather (agree's, without its checks)."""
    cdef cnp.npy_intp dims[2]
    dims[0], dims[1] = comm.size, cnp.PyArray_DIM(<cnp.ndarray>message, 0)
    cdef cnp.ndarray rows = cnp.PyArray_EMPTY(2, dims, cnp.NPY_DOUBLE, 0)
    comm.Allgather(message, rows)
    return rows


cdef inline bint _all_well(cnp.ndarray rows, Py_ssize_t C, bint head):
    """No rank's failure flag is set, and with ``head`` (the forward's message) every rank's
    width is C and their counts add up to more than one value per channel."""
    cdef const double *p = <const double *>cnp.PyArray_DATA(rows)
    cdef Py_ssize_t r, n = cnp.PyArray_DIM(rows, 1)
    cdef double total = 0.0
    for r in range(cnp.PyArray_DIM(rows, 0)):
        if p[r * n] != 0.0 or (head and p[r * n + 1] != <double>C):
            return False
        total += p[r * n + 2] if head else 0.0
    return not head or total > 1.0


cdef tuple _gather_parts(object comm, cnp.ndarray message, Py_ssize_t C, Py_ssize_t head):
    """The forward's collectives: ``(True, parts)``, parts every rank's (count, mean[C],
    m2[C]) rows in rank order (the ``head`` values of each message, then a wider layer's rest
    once the heads agree); or ``(False, heads)`` where a rank failed or their widths or
    counts are wrong (the same on every rank)."""
    cdef Py_ssize_t n = cnp.PyArray_DIM(message, 0)
    cdef cnp.ndarray rows = _gather(comm, message if n == head else message[:head])
    if not _all_well(rows, C, True):
        return False, rows
    if n == head:
        return True, rows[:, 2:3 + 2 * C]
    return True, np.concatenate([rows, _gather(comm, message[head:])], axis=1)[:, 2:]


def sync_gather(object comm, object message, Py_ssize_t C, Py_ssize_t head):
    """The checked path's forward collectives (_gather_parts) on its ``message`` (a 1-D
    float64 array of at least ``head`` values, the flag set where this rank failed)."""
    return _gather_parts(comm, <cnp.ndarray?>message, C, head)


def sync_train_call(object comm, object x, int kind, long long ranks, Py_ssize_t C,
                    object weight, object bias, object running_mean, object running_var,
                    object counter, Py_ssize_t head, double eps, double factor, object out,
                    int n_threads):
    """A training forward by the entries in one call: sync_train_begin, the collectives on
    ``comm`` (the message's ``head`` values, then a wider layer's rest), sync_train_finish.
    Returns (y, stats, count) as sync_train_finish; None, having sent nothing, where
    sync_train_begin does not take the call or runs out of memory; or, where a rank failed
    or their widths or counts are wrong, every rank's heads (a (size, head) array, the same
    on every rank) for the caller to raise from."""
    try:
        message = sync_train_begin(x, kind, ranks, C, weight, bias, running_mean, running_var,
                                   counter, head, n_threads)
    except MemoryError:  # nothing sent: the checked path agrees on it with the others
        return None
    if message is None:
        return None
    ok, rows = _gather_parts(comm, message, C, head)
    if not ok:
        return rows
    return sync_train_finish(x, rows, weight, bias, running_mean, running_var, counter, eps,
                             factor, out, n_threads)


def sync_grad_call(object comm, object x, object dy, object mean, object invstd, double count,
                   object weight, object out, int n_threads):
    """The backward of a sync_train_call forward in one call: sync_grad_begin, the
    collective on ``comm``, sync_grad_finish. Returns (dx, grad_weight, grad_bias); None,
    having sent nothing, where sync_grad_begin does not take it or runs out of memory; or,
    where a rank failed, every rank's messages for the caller to raise from."""
    try:
        message = sync_grad_begin(x, dy, mean, n_threads)
    except MemoryError:
        return None
    if message is None:
        return None
    cdef cnp.ndarray rows = _gather(comm, message)
    if not _all_well(rows, 0, False):
        return rows
    return sync_grad_finish(x, dy, rows[:, 1:], message[1:], mean, invstd, count, weight, out,
                            n_threads)
