"""Edge values and arguments (issue 20, items 7, 8 and 10): byte-swapped running arrays are
updated; empty batches give zero parameter gradients; huge values, bad eps, infinities and
masked arrays behave as a careful user expects (torch's behaviour named where it differs)."""
import numpy as np
import pytest

import cnorm

FORMS = {
    "batch_norm": lambda x, rm, rv: cnorm.batch_norm(x, rm, rv, training=True),
    "batch_norm_act": lambda x, rm, rv: cnorm.batch_norm_act(x, rm, rv, training=True),
    "instance_norm": lambda x, rm, rv: cnorm.instance_norm(x, rm, rv),
}


@pytest.mark.parametrize("form", list(FORMS))
def test_byte_swapped_running_arrays_are_updated(form, rng):
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * 2 + 1
    native = np.zeros(3, np.float32), np.ones(3, np.float32)
    swapped = np.zeros(3, ">f4"), np.ones(3, ">f4")
    FORMS[form](x, *native)
    FORMS[form](x, *swapped)
    assert swapped[0].dtype == ">f4"  # the caller's own arrays, in their byte order
    for a, b in zip(native, swapped):
        assert np.array_equal(a, b) and not np.all(b == b[0])


@pytest.mark.parametrize("form", list(FORMS))
def test_running_arrays_that_cannot_be_updated_are_refused(form, rng):
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    ro = np.zeros(3, np.float32)
    ro.flags.writeable = False
    for rm, what in (([0.0] * 3, "list"), (ro, "read-only")):
        with pytest.raises(ValueError, match=what):
            FORMS[form](x, rm, np.ones(3, np.float32))


def _empty_grads(layer, shape):
    x = np.zeros(shape, np.float32)
    layer(x)
    dx = layer.backward(x)
    return dx, layer.grad_weight, layer.grad_bias


EMPTY = {
    "bn2d": lambda: cnorm.BatchNorm2d(3),
    "bnact2d": lambda: cnorm.BatchNormAct2d(3),
    "in2d": lambda: cnorm.InstanceNorm2d(3, affine=True),
    "gn": lambda: cnorm.GroupNorm(3, 3),
}


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4)])
@pytest.mark.parametrize("kind", list(EMPTY))
def test_an_empty_batch_gives_zero_parameter_gradients(kind, shape):
    dx, gw, gb = _empty_grads(EMPTY[kind](), shape)
    assert dx.shape == shape
    assert np.array_equal(gw, np.zeros(3)) and np.array_equal(gb, np.zeros(3))
    if kind.startswith("bn"):  # torch 2.13 gives 0 here (it raises for an empty instance
        torch = pytest.importorskip("torch")  # norm batch, and its group norm gives NaN)
        t = torch.nn.BatchNorm2d(3)
        xt = torch.zeros(shape, requires_grad=True)
        t(xt).sum().backward()
        assert np.array_equal(t.weight.grad.numpy(), gw)


def test_batch_norm_eps_follows_torch(rng):
    """eps <= 0 in training gave NaN for a constant channel; torch refuses it (and a negative
    one in eval). Other norms accept eps = 0, as torch's do."""
    x = np.ones((4, 3, 5), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    for eps in (0.0, -1e-5):
        with pytest.raises(ValueError, match="positive during training"):
            cnorm.batch_norm(x, rm, rv, training=True, eps=eps)
        with pytest.raises(ValueError, match="positive during training"):
            cnorm.BatchNorm1d(3, eps=eps)(x)
    assert np.all(np.isfinite(cnorm.batch_norm(x, rm, rv, training=False, eps=0.0)))
    with pytest.raises(ValueError, match="non-negative"):
        cnorm.batch_norm(x, rm, rv, training=False, eps=-1.0)
    with pytest.raises(TypeError, match="real number"):
        cnorm.batch_norm(x, rm, rv, training=True, eps="a")
    assert np.all(rm == 0) and np.all(rv == 1)  # nothing moved by the refused calls
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="positive during training"):
        torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True, eps=0.0)


def test_infinite_values_give_infinite_means(rng):
    """+Inf in a batch: the mean is inf (-inf, or NaN for both), as NumPy's and torch's,
    not NaN from inf - inf inside the sums; the variance is NaN as theirs."""
    for shape in [(8, 3, 4, 4), (64, 3, 64, 64)]:
        for cl in (False, True):
            x = rng.standard_normal(shape).astype(np.float32)
            x[0, 0, 0, 0] = np.inf          # first value of a chunk: the shift itself
            x[-1, 0, -1, -1] = np.inf
            x[1, 1, 2, 2] = -np.inf
            x[3, 2, 1, 1], x[5, 2, 0, 0] = np.inf, -np.inf
            if cl:
                x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
            want = np.mean(x.astype(np.float64), axis=(0, 2, 3))
            mean, var = cnorm.moments(x, (0, 2, 3))
            assert np.array_equal(mean, want.astype(np.float32), equal_nan=True), (mean, want)
            assert np.all(np.isnan(var))
            layer = cnorm.BatchNorm2d(3)
            layer(x)
            assert np.array_equal(layer.running_mean, (0.1 * want).astype(np.float32),
                                  equal_nan=True)


def test_finite_data_keeps_its_bits_beside_an_infinite_channel(rng):
    """The infinity branches are taken only by non-finite data: the other channels' statistics
    are those of the same data without the infinities."""
    x = rng.standard_normal((16, 3, 40, 40)).astype(np.float32) + 3
    clean = cnorm.moments(x, (0, 2, 3))
    x[2, 0, 5, 5] = np.inf
    got = cnorm.moments(x, (0, 2, 3))
    assert got[0][1:].tobytes() == clean[0][1:].tobytes()
    assert got[1][1:].tobytes() == clean[1][1:].tobytes()


@pytest.mark.parametrize("call", [
    lambda x: cnorm.batch_norm(x, None, None, training=True),
    lambda x: cnorm.layer_norm(x, (4,)),
    lambda x: cnorm.moments(x, 0),
    lambda x: cnorm.BatchNorm2d(3)(x),
    lambda x: cnorm.Moments().update(x),
    lambda x: cnorm.Standardizer().fit(x),
])
def test_masked_arrays_are_refused(call):
    x = np.ma.masked_array(np.ones((2, 3, 4, 4), np.float32), mask=False)
    x.mask[0, 0, 0, 0] = True
    with pytest.raises(TypeError, match="masked"):
        call(x)


def test_standardizer_eps_of_the_wrong_type_says_so(rng):
    for eps in ("a", None, [1e-3], True):
        with pytest.raises(ValueError, match="eps must be a non-negative number"):
            cnorm.Standardizer(eps=eps).fit(rng.standard_normal((10, 3)))


def test_out_overlapping_the_input_reads_a_copy(rng):
    """Standardizer.transform and normalize_images with out= over their own input (shifted,
    reversed or the same memory): the values of a separate output (NumPy's ufuncs buffer so)."""
    A = rng.standard_normal((500, 4)).astype(np.float32) * 3 + 2
    s = cnorm.Standardizer().fit(A)
    want = s.transform(A)
    for into in (lambda B: B[::-1], lambda B: B):
        B = A.copy()
        assert np.array_equal(s.transform(B, out=into(B)), want)
    B = A.copy()
    assert np.array_equal(s.transform(B[:-1], out=B[1:]), want[:-1])
    img = rng.uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    want = cnorm.normalize_images(img, mean, std, input_layout="NCHW")
    im = img.copy()
    assert np.array_equal(cnorm.normalize_images(im, mean, std, input_layout="NCHW", out=im),
                          want)
    im = np.ascontiguousarray(img.transpose(0, 2, 3, 1))  # NHWC in, NCHW out, same memory
    out = im.reshape(-1).view(np.float32).reshape(2, 3, 8, 8)
    assert np.array_equal(cnorm.normalize_images(im, mean, std, out=out), want)


def test_dask_transform_refuses_out(rng):
    da = pytest.importorskip("dask.array")
    X = rng.standard_normal((100, 3))
    s = cnorm.Standardizer().fit(X)
    with pytest.raises(TypeError, match="lazy"):
        s.transform(da.from_array(X, chunks=50), out=np.empty_like(X))


WIDE = {
    "bn": (lambda dt: cnorm.BatchNorm2d(3, dtype=dt), (0, 2, 3)),
    "gn": (lambda dt: cnorm.GroupNorm(3, 3, dtype=dt), (2, 3)),
    "in": (lambda dt: cnorm.InstanceNorm2d(3, dtype=dt), (2, 3)),
    "ln": (lambda dt: cnorm.LayerNorm((4, 4), dtype=dt), (2, 3)),
}


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("kind", list(WIDE))
def test_values_near_the_float32_maximum_are_exact(kind, layout, rng):
    """|x| near 3e38: x - mean overflowed float32 and the output was +-inf (torch gives 0 or
    NaN). Such an op now runs on a float64 copy: y and dx within float32 rounding of the float64
    layer's, in the input's layout."""
    make, axes = WIDE[kind]
    x = (rng.choice([-1, 1], (8, 3, 4, 4)) * rng.uniform(2.5e38, 3.3e38, (8, 3, 4, 4)))
    x = x.astype(np.float32)
    if layout == "nhwc":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    a, b = make(np.float32), make(np.float64)
    y, dx = a(x), a.backward(dy)
    want_y, want_dx = b(x.astype(np.float64)), b.backward(dy.astype(np.float64))
    assert y.dtype == np.float32 and y.strides == want_y.astype(np.float32).strides
    assert np.all(np.isfinite(y)) and np.max(np.abs(y - want_y)) < 1e-6 * np.max(np.abs(want_y))
    assert np.max(np.abs(dx - want_dx)) <= 1e-6 * np.max(np.abs(want_dx))
    ref = (x.astype(np.float64) - x.astype(np.float64).mean(axis=axes, keepdims=True)) / \
        x.astype(np.float64).std(axis=axes, keepdims=True)
    assert np.max(np.abs(y - ref)) < 1e-6
