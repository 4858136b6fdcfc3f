"""Memory layouts: awkward arrays (Fortran order, negative strides, slices, read-only,
byte-swapped) and channels-last give the C-order results for every layer kind, outputs keep
the input's layout and never share its memory, and the composable kernel steps give the fused
kernels' bits."""
import os

import numpy as np
import pytest

from cnorm._core import backend as _backend
from cnorm._core.layout import storage
from cnorm.testing import (
    FAMILY_4D,
    HALVES,
    KINDS,
    channels_last,
    isolated,
    make,
    make_input,
    reference,
    rel_err,
    shape_for,
)

TOL = {np.float32: 2e-5, np.float64: 1e-11}


def awkward_variants(x):
    """(name, array) views and copies of x's values in awkward memory: same dtype family."""
    big = np.zeros(tuple(2 * d for d in x.shape), x.dtype)
    big[tuple(slice(None, None, 2) for _ in x.shape)] = x
    ro = x.copy()
    ro.flags.writeable = False
    return [("fortran", np.asfortranarray(x)),
            ("negative_strides", x[::-1, ..., ::-1]),
            ("strided_slice", big[tuple(slice(None, None, 2) for _ in x.shape)]),
            ("read_only", ro),
            ("byteswapped", x.astype(x.dtype.newbyteorder())),
            ("transposed_back", np.ascontiguousarray(x.T).T)]


def check_awkward(kind, dtype):
    """Every awkward variant of x and dy: output and gradient match the float64 reference of
    the same logical values, and neither input is modified."""
    rng = np.random.default_rng(1)
    shape = shape_for(kind)
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    for name, xa in awkward_variants(x):
        for dname, dya in awkward_variants(dy)[:4]:
            layer = make(kind, shape, dtype)
            x_before, dy_before = xa.copy(), dya.copy()
            y = layer(xa)
            dx = layer.backward(dya)
            assert y.dtype == np.dtype(dtype) and dx.dtype == np.dtype(dtype), name
            assert y.shape == shape and dx.shape == shape, name
            assert np.array_equal(xa, x_before) and np.array_equal(dya, dy_before), name
            ry, rdx = reference(kind, layer, xa, dya)
            assert rel_err(y, ry) < TOL[dtype], (name, dname)
            assert rel_err(dx, rdx) < 10 * TOL[dtype], (name, dname)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", list(KINDS))
def test_awkward_arrays(kind, dtype):
    """In a child process: odd strides are where a kernel would crash."""
    isolated(f"""
        import numpy as np, test_layouts as t
        t.check_awkward({kind!r}, np.{np.dtype(dtype).name})
    """, path=os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 6, 9, 11), (3, 8, 40, 300), (2, 4, 3, 4, 5)])
@pytest.mark.parametrize("kind", FAMILY_4D + ["bn3d", "in3d"])
def test_channels_last_matches_c_order(rng, kind, shape, dtype, training):
    if len(shape) not in KINDS[kind][0]:
        pytest.skip("kind takes other ranks")
    x = make_input(rng, shape, dtype, offset=3.0)
    dy = rng.standard_normal(shape).astype(dtype)
    a, b = make(kind, shape, dtype), make(kind, shape, dtype)
    a.train(training)
    b.train(training)
    y_c, dx_c = a(x), a.backward(dy)
    y, dx = b(channels_last(x)), b.backward(channels_last(dy))
    assert rel_err(y, y_c) < (4e-6 if dtype == np.float32 else 1e-13)
    assert rel_err(dx, dx_c) < (4e-5 if dtype == np.float32 else 1e-12)
    for out in (y, dx):  # the input's layout, in new memory
        assert np.moveaxis(out, 1, -1).flags.c_contiguous and not out.flags.c_contiguous
    assert y_c.flags.c_contiguous and dx_c.flags.c_contiguous
    assert not np.shares_memory(x, y_c) and not np.shares_memory(a(x), y_c)


@pytest.mark.parametrize("shape,layout", [((5, 6, 30, 40), "nchw"), ((5, 6, 30, 40), "nhwc"),
                                          ((40, 7, 9), "nchw"), ((300, 20), "nchw")])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_steps_compose_to_the_fused_kernels(rng, shape, layout, dtype):
    """partial -> merge -> finalize -> normalize, and backward sums -> backward apply, give
    bit for bit what the batch-norm layer gives (the steps are the same code)."""
    k = _backend.kernels
    x = make_input(rng, shape, dtype, offset=20)
    x = channels_last(x) if layout == "nhwc" else x
    layer = make("bn2d" if x.ndim == 4 else "bn1d", shape, dtype, rng)
    y, dy = layer(x), rng.standard_normal(shape).astype(dtype)
    dx = layer.backward(dy)
    view = layer._saved.layout.view
    x3, dy3 = view(x), view(dy)
    n, mean, m2 = k.merge_stats(*k.partial_stats(x3, 2))
    invstd = 1.0 / np.sqrt(m2 / n + layer.eps)
    w = layer.weight.astype(np.float64)
    y3 = np.empty_like(x3)
    k.normalize(x3, mean, invstd * w, layer.bias.astype(np.float64), y3, 2)
    assert y3.tobytes() == view(y).tobytes()
    sdy, sdyx = k.backward_sums(x3, dy3, mean, 2)
    k1 = w * invstd
    dx3 = np.empty_like(x3)
    k.backward_apply(x3, dy3, mean, k1, -invstd * invstd * invstd * (w * sdyx) / n,
                     -invstd * (w * sdy) / n,
                     dx3, True, 2)
    assert dx3.tobytes() == view(dx).tobytes()
    np.testing.assert_array_equal(layer.grad_bias, sdy.astype(dtype))


def test_partial_statistics_of_parts_merge_to_the_whole(rng):
    """Statistics of a batch = merge of the partials of its parts (streamed in chunks)."""
    k = _backend.kernels
    x = make_input(rng, (6, 4, 50, 70), np.float64, offset=1e3)
    parts = [k.partial_stats(p.reshape(p.shape[0], 4, -1)) for p in (x[:2], x[2:3], x[3:])]
    n, mean, M2 = k.merge_stats(*(np.concatenate(a) for a in zip(*parts)))
    assert n == x.size // 4
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), rtol=1e-14)
    np.testing.assert_allclose(M2 / n, x.var(axis=(0, 2, 3)), rtol=1e-12)


@pytest.mark.parametrize("weighted", [True, False])
def test_sync_steps_merge_rank_rows_as_the_numpy_expressions(rng, weighted):
    """SyncBatchNorm's compiled finish: sync_stats merges every rank's (count, mean, m2) row in
    rank order with merge_stats' bits (an empty rank's row of zeros is skipped) and rounds
    invstd and scale as NumPy does; the result is the whole batch's statistics. sync_coefficients
    adds the ranks' backward sums in rank order and gives NumPy's k1, k2, k3 bit for bit."""
    k, C, eps = _backend.kernels, 5, 1e-5
    x = make_input(rng, (7, C, 30), np.float64, offset=40)
    shards = [x[:3], x[3:3], x[3:4], x[4:]]  # uneven, one of them empty
    rows = np.zeros((len(shards), 1 + 2 * C))
    for r, s in enumerate(shards):
        n, mean, m2 = k.channel_stats(s, 1) if s.size else (0, None, None)
        if n:
            rows[r] = np.concatenate([[n], mean, m2])
    w = rng.uniform(0.5, 2.0, C) if weighted else None
    total, mean, m2, invstd, scale = k.sync_stats(rows, eps, w)
    keep = rows[:, 0] > 0
    n, mean_ref, m2_ref = k.merge_stats(rows[keep, 0].copy(), rows[keep, 1:C + 1].copy(),
                                        rows[keep, C + 1:].copy())
    assert total == n == 7 * 30
    assert mean.tobytes() == mean_ref.tobytes() and m2.tobytes() == m2_ref.tobytes()
    inv_ref = 1.0 / np.sqrt(m2_ref / n + eps)
    assert invstd.tobytes() == inv_ref.tobytes()
    assert scale.tobytes() == (inv_ref * (1.0 if w is None else w)).tobytes()
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2)), rtol=1e-14)
    np.testing.assert_allclose(m2 / n, x.var(axis=(0, 2)), rtol=1e-12)
    sums = rng.standard_normal((len(shards), 2 * C))
    k1, k2, k3 = k.sync_coefficients(sums, invstd, total, w)
    S1, S2 = np.zeros(C), np.zeros(C)
    for r in range(len(shards)):
        S1 += sums[r, :C]
        S2 += sums[r, C:]
    ww = 1.0 if w is None else w
    assert k1.tobytes() == (ww * invstd * np.ones(C)).tobytes()
    assert k2.tobytes() == (-invstd * invstd * invstd * (ww * S2) / total).tobytes()
    assert k3.tobytes() == (-invstd * (ww * S1) / total).tobytes()


def awkward_statistics(rng, shape, dtype, kind):
    """Plain values; an outlier at the start of every chunk (the shift of its sums far from
    the rest); values near 1e20 or 1e-20 (float32 lanes overflow or underflow: the wide
    sums)."""
    x = make_input(rng, shape, np.float64, offset=3.0).reshape(shape[0], shape[1], -1)
    if kind == "outliers":
        flat = x.transpose(1, 0, 2).reshape(shape[1], -1)  # each channel's (outer, inner) plane
        flat[:, ::4096] = 3e4
        x = flat.reshape(shape[1], shape[0], -1).transpose(1, 0, 2)
    scale = {"huge": 1e20, "tiny": 1e-20}.get(kind, 1.0)
    if np.dtype(dtype).itemsize == 2:
        scale = min(scale, 1.0)
    return np.ascontiguousarray(x * scale).astype(dtype)


@pytest.mark.parametrize("kind", ["plain", "outliers", "huge", "tiny"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, *HALVES], ids=str)
@pytest.mark.parametrize("shape", [(9, 5, 700), (3, 70, 1000), (6, 3, 4099), (1, 4, 9000)])
def test_statistics_in_memory_order_give_the_in_cache_bits(rng, shape, dtype, kind):
    """The whole-array passes read many planar channels at once in memory order; the in-cache
    passes read one channel at a time. Both must give the same bits (a layer takes one or the
    other by shape), for the moments and for the backward sums, on 1 and 2 threads."""
    x = awkward_statistics(rng, shape, dtype, kind)
    dy = (rng.standard_normal(x.shape) * 3 - 1).astype(dtype)
    dt = x.dtype
    k = lambda name: _backend.kernel(name, dt)  # noqa: E731
    ref = x.astype(np.float64).transpose(1, 0, 2).reshape(shape[1], -1)
    x, dy = storage(x), storage(dy)
    mean, m2 = k("plane_moments")(x)
    s1, s2 = k("plane_sums")(x, dy, mean)
    assert np.isfinite(mean).all() and np.isfinite(m2).all()
    assert (abs(mean - ref.mean(axis=1)) <= 1e-5 * ref.std(axis=1)).all()
    for nt in (1, 2):
        _, mean_nt, m2_nt = k("channel_stats")(x, nt)
        assert mean_nt.tobytes() == mean.tobytes() and m2_nt.tobytes() == m2.tobytes()
        s1_nt, s2_nt = k("backward_sums")(x, dy, mean, nt)
        assert s1_nt.tobytes() == s1.tobytes() and s2_nt.tobytes() == s2.tobytes()


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("kind", ["bn2d", "gn", "in2d"])
def test_streamed_training_outputs_match_the_reference(rng, kind, layout):
    """Training backwards whose dx is streamed (planar samples of 590 KB: the group norms'
    per-sample passes, batch norm's whole-array pass; channels-last by ordinary stores) and
    forwards into an output 4 bytes off any alignment NumPy gives: the float64 reference's
    values."""
    shape = (3, 64, 48, 48)
    x = make_input(rng, shape, np.float32, offset=3.0)
    x = channels_last(x) if layout == "nhwc" else x
    dy = rng.standard_normal(shape).astype(np.float32)
    layer = make(kind, shape, np.float32)
    y = layer(x)
    dx = layer.backward(channels_last(dy) if layout == "nhwc" else dy)
    ry, rdx = reference(kind, layer, x, dy)
    assert rel_err(y, ry) < 2e-6 and rel_err(dx, rdx) < 2e-5
    buf = np.empty(x.size + 1, np.float32)
    out = buf[1:].reshape(shape)
    out = channels_last(out) if layout == "nhwc" else out
    import cnorm

    if kind == "gn":
        got = cnorm.group_norm(x, layer.num_groups, layer.weight, layer.bias, out=out)
    elif kind == "in2d":
        got = cnorm.instance_norm(x, weight=layer.weight, bias=layer.bias, out=out)
    else:
        got = cnorm.batch_norm(x, None, None, layer.weight, layer.bias, training=True, out=out)
    assert got is out and rel_err(got, ry) < 2e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_64_channels_last_sum_whole_rows_with_the_bits_of_channel_blocks(rng, dtype):
    """Channels-last statistics of 64 channels read whole rows in memory order; each channel
    still sees its rows in order with the same flushes, so its mean and variance are bit for
    bit those of 32-channel halves (summed a channel block at a time), training forward and
    backward alike, and match float64."""
    import cnorm

    x = channels_last(make_input(rng, (3, 64, 17, 19), dtype, offset=20.0))
    dy = channels_last(rng.standard_normal(x.shape).astype(dtype))
    whole = cnorm.BatchNorm2d(64, dtype=dtype)
    y, dx = whole(x), whole.backward(dy)
    for h in (slice(0, 32), slice(32, 64)):
        half = cnorm.BatchNorm2d(32, dtype=dtype)
        xh, dyh = channels_last(np.ascontiguousarray(x[:, h])), channels_last(dy[:, h].copy())
        assert half(xh).tobytes() == np.ascontiguousarray(y[:, h]).tobytes()
        assert half.running_var.tobytes() == whole.running_var[h].tobytes()
        assert half.backward(dyh).tobytes() == np.ascontiguousarray(dx[:, h]).tobytes()
        assert half.grad_weight.tobytes() == whole.grad_weight[h].tobytes()
    xd = x.astype(np.float64)
    ref = (xd - xd.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(
        xd.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    assert rel_err(y, ref) < TOL[dtype]


@pytest.mark.openmp
@pytest.mark.parametrize("R,L", [(300, 4100), (24, 40000)])
def test_long_row_backward_in_row_blocks_keeps_its_bits(rng, restore_threads, R, L):
    """Long rows run the backward in blocks of rows (a multiple of FLUSH and of the threads,
    so the blocks differ by thread count), dx by blocks of columns (40000: three of them,
    shared out between threads): dx and the parameter gradients have the same bits at 1-4
    threads, dx rows those of a one-block call, and the weight gradient matches float64."""
    import cnorm

    x = make_input(rng, (R, L), np.float32, offset=3.0)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.uniform(0.5, 1.5, L).astype(np.float32)
    runs = []
    for n in (1, 2, 3, 4):
        cnorm.set_num_threads(n)
        runs.append([a.tobytes() for a in cnorm.layer_norm_backward(dy, x, (L,), w, w)])
    assert all(r == runs[0] for r in runs[1:])
    dx, gw = cnorm.layer_norm_backward(dy, x, (L,), w, w)[:2]
    assert dx[:20].tobytes() == cnorm.layer_norm_backward(dy[:20], x[:20], (L,), w,
                                                          w)[0].tobytes()
    xd = x.astype(np.float64)
    x_hat = (xd - xd.mean(axis=1, keepdims=True)) / np.sqrt(xd.var(axis=1, keepdims=True)
                                                             + 1e-5)
    assert rel_err(gw, (dy * x_hat).sum(axis=0)) < 1e-5


def eps_of(rms):
    return np.finfo(np.float32).eps if rms else 1e-5


@pytest.mark.parametrize("rms", [False, True])
def test_streamed_row_norm_outputs_give_the_bits_of_ordinary_stores(rng, rms):
    """The backward of long rows (column blocks) streams dx from STREAM_MIN bytes (per-value
    weight: LayerNorm, RMSNorm): the dx rows of a large call are bit for bit those of a small
    one (ordinary stores), and the weight's gradient (read back from cache) matches float64;
    the forward's rows likewise (streamed for long rows of ROWS_L3 bytes and more), also
    into an unaligned out."""
    import cnorm

    x = make_input(rng, (80, 2049), np.float32, offset=3.0)
    W = rng.uniform(0.5, 1.5, 2049).astype(np.float32)
    B = None if rms else rng.standard_normal(2049).astype(np.float32)
    norm = (lambda a, **k: cnorm.rms_norm(a, (2049,), W, **k)) if rms else (
        lambda a, **k: cnorm.layer_norm(a, (2049,), W, B, **k))
    big, small = norm(x), norm(x[:12])
    assert big[:12].tobytes() == small.tobytes()
    dy = rng.standard_normal((80, 4100)).astype(np.float32)
    xl = make_input(rng, (80, 4100), np.float32, offset=3.0)
    wl = rng.uniform(0.5, 1.5, 4100).astype(np.float32)
    back = (lambda a, g: cnorm.rms_norm_backward(g, a, (4100,), wl)) if rms else (
        lambda a, g: cnorm.layer_norm_backward(g, a, (4100,), wl, wl))
    big_g, small_g = back(xl, dy), back(xl[:12], dy[:12])  # long rows: dx by column blocks
    assert big_g[0][:12].tobytes() == small_g[0].tobytes()
    xd = xl.astype(np.float64)  # the weight's gradient: sum over rows of dy * x_hat
    mu = 0.0 if rms else xd.mean(axis=1, keepdims=True)
    var = (xd ** 2).mean(axis=1, keepdims=True) if rms else xd.var(axis=1, keepdims=True)
    x_hat = (xd - mu) / np.sqrt(var + (np.finfo(np.float32).eps if rms else 1e-5))
    assert rel_err(big_g[1], (dy * x_hat).sum(axis=0)) < 1e-5
    out = np.empty(x.size + 1, np.float32)[1:].reshape(x.shape)
    assert norm(x, out=out) is out and out.tobytes() == big.tobytes()
    # long rows of ROWS_L3 bytes and more: the forward's outputs stream too
    xf = make_input(rng, (520, 4100), np.float32, offset=3.0)
    fwd = (lambda a, **k: cnorm.rms_norm(a, (4100,), wl, **k)) if rms else (
        lambda a, **k: cnorm.layer_norm(a, (4100,), wl, wl, **k))
    yf = fwd(xf)
    assert yf[:12].tobytes() == fwd(xf[:12]).tobytes()
    outf = np.empty(xf.size + 3, np.float32)[3:].reshape(xf.shape)
    assert fwd(xf, out=outf) is outf and outf.tobytes() == yf.tobytes()
    xd = xf[500:].astype(np.float64)
    mu = 0.0 if rms else xd.mean(axis=1, keepdims=True)
    var = (xd ** 2).mean(axis=1, keepdims=True) if rms else xd.var(axis=1, keepdims=True)
    ref = (xd - mu) / np.sqrt(var + eps_of(rms)) * wl + (0.0 if rms else wl)
    assert rel_err(yf[500:], ref) < 2e-6
    xd = x.astype(np.float64)
    mu = 0.0 if rms else xd.mean(axis=1, keepdims=True)
    var = (xd ** 2).mean(axis=1, keepdims=True) if rms else xd.var(axis=1, keepdims=True)
    eps = np.finfo(np.float32).eps if rms else 1e-5
    ref = (xd - mu) / np.sqrt(var + eps) * W + (0.0 if rms else B)
    assert rel_err(big, ref) < 2e-6


def streamed_and_plain(run, nbytes):
    """``run()``'s results at the backend's stream size, then with planar forward outputs
    streaming from ``nbytes`` up (the backend's size restored after): (plain, streamed)."""
    k = _backend.kernels
    plain = run()
    try:
        k.set_stream_out(nbytes)
        streamed = run()
    finally:
        k.set_stream_out(_backend.STREAM_OUT)
    return plain, streamed


@pytest.mark.openmp
@pytest.mark.parametrize("shape", [(2, 8, 200, 200), (6, 16, 40, 41)])
def test_streamed_planar_forwards_give_the_bits_of_ordinary_stores(rng, restore_threads,
                                                                   shape):
    """Planar batch-norm forward outputs from the kernels' stream size up (set low here; the
    backend sets three quarters of the L3) are stored streaming: in-cache groups ((2, 8, 200,
    200)) and the whole-array pass ((6, 16, 40, 41)), training and eval, aligned or not, at 1
    and 2 threads, bit for bit the ordinary stores' outputs, and the float64 reference's."""
    import cnorm

    k = _backend.kernels
    assert k.get_stream_out() == _backend.STREAM_OUT > 0
    x = make_input(rng, shape, np.float32, offset=3.0)
    w = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32)
    b = rng.standard_normal(shape[1]).astype(np.float32)
    rm, rv = rng.standard_normal(shape[1]), rng.uniform(0.5, 2, shape[1])

    def run():
        outs = []
        for n in (1, 2):
            cnorm.set_num_threads(n)
            for training in (True, False):
                out = np.empty(x.size + 1, np.float32)[1:].reshape(shape)  # 4 bytes off
                outs.append(cnorm.batch_norm(x, rm.astype(np.float32), rv.astype(np.float32),
                                             w, b, training=training))
                outs.append(cnorm.batch_norm(x, rm.astype(np.float32), rv.astype(np.float32),
                                             w, b, training=training, out=out))
        return [o.tobytes() for o in outs], outs

    (plain, _), (streamed, outs) = streamed_and_plain(run, 0)
    assert streamed == plain
    xd = x.astype(np.float64)
    ax = (0, 2, 3)
    shp = (1, -1, 1, 1)
    train = (xd - xd.mean(axis=ax).reshape(shp)) / np.sqrt(xd.var(axis=ax).reshape(shp) + 1e-5)
    evals = (xd - rm.reshape(shp)) / np.sqrt(rv.reshape(shp) + 1e-5)
    assert rel_err(outs[0], train * w.reshape(shp) + b.reshape(shp)) < 2e-6
    assert rel_err(outs[2], evals * w.reshape(shp) + b.reshape(shp)) < 2e-6


@pytest.mark.openmp
def test_group_norm_samples_stream_by_the_size_of_the_whole_output(rng, restore_threads):
    """A group norm runs sample by sample; its outputs stream by the size of the call's whole
    output, not of one sample: with the stream size (1 MB here) between a sample's 590 KB and
    the call's 1.8 MB, the outputs at 1 and 2 threads, aligned or not, are bit for bit the
    ordinary stores' and the float64 reference's."""
    import cnorm

    shape, G = (3, 32, 64, 72), 8
    x = make_input(rng, shape, np.float32, offset=3.0)
    w = rng.uniform(0.5, 1.5, shape[1]).astype(np.float32)
    b = rng.standard_normal(shape[1]).astype(np.float32)

    def run():
        outs = []
        for n in (1, 2):
            cnorm.set_num_threads(n)
            out = np.empty(x.size + 1, np.float32)[1:].reshape(shape)  # 4 bytes off
            outs.append(cnorm.group_norm(x, G, w, b))
            outs.append(cnorm.group_norm(x, G, w, b, out=out))
        return [o.tobytes() for o in outs], outs

    (plain, _), (streamed, outs) = streamed_and_plain(run, 1 << 20)
    assert streamed == plain
    xg = x.astype(np.float64).reshape(shape[0], G, -1)
    ref = ((xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + 1e-5)
           ).reshape(shape) * w.reshape(1, -1, 1, 1) + b.reshape(1, -1, 1, 1)
    assert rel_err(outs[0], ref) < 2e-6
    assert rel_err(outs[3], ref) < 2e-6


def test_the_last_level_cache_is_read_from_sysfs(tmp_path):
    """The stream size's L3 from Linux's cache description, 32 MB where there is none."""
    f = tmp_path / "size"
    f.write_text("32768K\n")
    assert _backend.last_level_cache(str(f)) == 32 << 20
    f.write_text("1M\n")
    assert _backend.last_level_cache(str(f)) == 1 << 20
    assert _backend.last_level_cache(str(tmp_path / "none")) == 32 << 20
