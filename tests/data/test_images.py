"""cnorm.normalize_images: every input and output dtype and layout against a float64
reference, crops, mirroring, out=, threads and SIMD targets, bad input."""
import numpy as np
import pytest

import cnorm
from cnorm._core import backend as _backend

try:
    import ml_dtypes
except ImportError:  # the half extra
    ml_dtypes = None

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OUT = ["float32", "float16"] + (["bfloat16"] if ml_dtypes else [])
TARGETS = _backend.available_targets()


def images(rng, dtype, shape=(4, 21, 37, 3)):
    dt = np.dtype(dtype)
    if dt == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if dt == np.uint16:
        return rng.integers(0, 65536, shape, dtype=np.uint16)
    return rng.random(shape).astype(dt)


def reference(x, mean, std, scale, in_layout="NHWC", out_layout="NCHW", mirror=None):
    """float64: to NHWC, flip, normalize, to the output layout."""
    xf = np.asarray(x, dtype=np.float64)
    batched = xf.ndim == 4
    xf = xf if batched else xf[None]
    if in_layout == "NCHW":
        xf = xf.transpose(0, 2, 3, 1)
    if mirror is not None:
        xf = np.where(np.asarray(mirror).reshape(-1, 1, 1, 1), xf[:, :, ::-1], xf)
    y = (xf * scale - np.asarray(mean)) / np.asarray(std)
    if out_layout == "NCHW":
        y = y.transpose(0, 3, 1, 2)
    return y if batched else y[0]


def out_dtype(name):
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def assert_close(y, ref, name):
    """float32: a few ulps of the float32 result; half types: the float32 result rounded to
    the output type, so within one ulp of it (half an ulp plus the float32 error)."""
    yf = y.astype(np.float64)
    if name == "float32":
        assert np.max(np.abs(yf - ref)) <= 4e-7 * max(1.0, np.abs(ref).max())
        return
    ulp = {"float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[name]
    mag = np.maximum(np.abs(ref), 2.0 ** -14)
    spacing = ulp * 2.0 ** np.floor(np.log2(mag))
    assert np.all(np.abs(yf - ref) <= spacing * 1.0001)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float16", "float32"])
@pytest.mark.parametrize("out", OUT)
@pytest.mark.parametrize("in_layout,out_layout", [("NHWC", "NCHW"), ("NHWC", "NHWC"),
                                                  ("NCHW", "NCHW"), ("NCHW", "NHWC")])
def test_dtypes_and_layouts_match_the_reference(rng, dtype, out, in_layout, out_layout):
    x = images(rng, dtype)
    if in_layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    before = x.copy()
    y = cnorm.normalize_images(x, MEAN, STD, input_layout=in_layout, output_layout=out_layout,
                               dtype=out_dtype(out))
    scale = {"uint8": 1 / 255, "uint16": 1 / 65535}.get(dtype, 1.0)
    ref = reference(x, MEAN, STD, scale, in_layout, out_layout)
    assert y.dtype == out_dtype(out) and y.shape == ref.shape and y.flags.c_contiguous
    assert_close(y, ref, out)
    assert np.array_equal(x, before)


@pytest.mark.parametrize("C", [1, 3, 4, 5])
def test_channel_counts_crops_and_mirror(rng, C):
    base = images(rng, "uint8", (5, 40, 50, C))
    crop = base[:, 3:33, 7:41]  # a strided view, read in place
    mirror = np.array([True, False, True, True, False])
    mean, std = np.linspace(0.3, 0.6, C), np.linspace(0.2, 0.3, C)
    for out_layout in ("NCHW", "NHWC"):
        y = cnorm.normalize_images(crop, mean, std, mirror=mirror, output_layout=out_layout)
        assert_close(y, reference(crop, mean, std, 1 / 255, "NHWC", out_layout, mirror),
                     "float32")
    planar = base.transpose(0, 3, 1, 2)[:, :, ::2, ::-3]  # any strides in NCHW too
    y = cnorm.normalize_images(planar, mean, std, input_layout="NCHW", mirror=mirror)
    assert_close(y, reference(planar, mean, std, 1 / 255, "NCHW", "NCHW", mirror), "float32")


def test_unbatched_image_scale_and_out(rng):
    img = images(rng, "uint16", (30, 20, 3))
    y = cnorm.normalize_images(img, MEAN, STD, scale=2.0 ** -16)
    assert y.shape == (3, 30, 20)
    assert_close(y, reference(img, MEAN, STD, 2.0 ** -16), "float32")
    y2 = cnorm.normalize_images(img, MEAN, STD, mirror=True, output_layout="NHWC")
    assert_close(y2, reference(img, MEAN, STD, 1 / 65535, "NHWC", "NHWC", [True]), "float32")
    out = np.full((2, 3, 30, 20), np.nan, np.float32)
    batch = np.stack([img, img[::-1]])
    assert cnorm.normalize_images(batch, MEAN, STD, out=out) is out
    assert_close(out, reference(batch, MEAN, STD, 1 / 65535), "float32")


def test_float_images_propagate_nan(rng):
    x = images(rng, "float32")
    x[1, 2, 3, 1] = np.nan
    y = cnorm.normalize_images(x, MEAN, STD)
    assert np.isnan(y[1, 1, 2, 3]) and np.isnan(y).sum() == 1


@pytest.mark.openmp
def test_threads_and_targets_give_the_same_bits(rng, restore_threads, monkeypatch):
    x = images(rng, "uint8", (6, 64, 120, 3))
    def outputs():  # float32 mirrored, and float16 (a route of its own)
        return (cnorm.normalize_images(x, MEAN, STD, mirror=np.arange(6) % 2 == 0).tobytes()
                + cnorm.normalize_images(x, MEAN, STD, dtype=np.float16).tobytes())
    runs = []
    for n in (1, 2, 3):
        cnorm.set_num_threads(n)
        runs.append(outputs())
    for t in TARGETS:
        monkeypatch.setattr(_backend, "data", _backend.module_for(t, "_data"))
        runs.append(outputs())
    assert all(r == runs[0] for r in runs)


def test_bad_input_raises_and_writes_nothing(rng):
    x = images(rng, "uint8")
    out = np.zeros((4, 3, 21, 37), np.float32)
    cases = [
        (ValueError, "mean", dict(mean=(0.5, 0.5))),
        (ValueError, "std", dict(std=(0.2, 0.2, 0.2, 0.2))),
        (ValueError, "non-zero", dict(std=(0.2, 0.0, 0.2))),
        (ValueError, "input_layout", dict(input_layout="HWC")),
        (ValueError, "output_layout", dict(output_layout="nchw")),
        (ValueError, "out must have shape", dict(out=np.zeros((4, 3, 21, 36), np.float32))),
        (ValueError, "out must have shape", dict(out=np.zeros((4, 3, 21, 37), np.float64))),
        (ValueError, "out must be", dict(out=np.zeros((4, 21, 37, 3), np.float32)
                                         .transpose(0, 3, 1, 2))),
        (ValueError, "mirror", dict(mirror=[True, False])),
        (ValueError, "mirror", dict(mirror=np.ones(4, np.int64))),
        (TypeError, "output dtype", dict(dtype=np.float64)),
    ]
    for err, match, kw in cases:
        args = dict(mean=MEAN, std=STD, out=out)
        args.update(kw)
        with pytest.raises(err, match=match):
            cnorm.normalize_images(x, **args)
        assert not out.any()
    with pytest.raises(TypeError, match="unsupported images dtype int32"):
        cnorm.normalize_images(x.astype(np.int32), MEAN, STD, out=out)
    with pytest.raises(ValueError, match="4D"):
        cnorm.normalize_images(x[0, 0], MEAN, STD)
    assert not out.any()
