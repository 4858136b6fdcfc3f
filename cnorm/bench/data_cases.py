"""The benchmark cases of the data group (preparing data): input normalization of an image
batch, dataset statistics, and standardization, each against the tools a pipeline uses today.

Shared by the report (``python -m cnorm.bench``, a worker per implementation) and the
pytest-benchmark suite (bench/test_bench_data.py). Imports nothing but NumPy at the top.
"""
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]
Runner = Callable[[], Any]

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])

# name -> (input shape, input dtype, implementations, bytes moved per input byte, what the
# bandwidth is judged against: "copy" (read + write stream) or "read", the rivals of the
# issue's speed target: cnorm's speedup is over the fastest of them)
CASES: Dict[str, Tuple[Any, ...]] = {
    "normalize_images": ((64, 224, 224, 3), "uint8", ("cnorm", "torch", "cv2", "numpy"), 5,
                         "copy", ("torch", "cv2")),
    "moments": ((64, 224, 224, 3), "uint8", ("cnorm", "numpy"), 1, "read", ("numpy",)),
    "moments_f32": ((64, 224, 224, 3), "float32", ("cnorm", "numpy"), 1, "read", ("numpy",)),
    "standardize": ((4096, 512), "float32", ("cnorm", "sklearn", "numpy"), 2, "copy",
                    ("sklearn",)),
    # fused blocks, forward + backward: at least x, r read and y written, then dy, y, x read
    # and dx, grad_residual written
    "bn_add_relu": ((32, 64, 56, 56), "float32", ("cnorm", "cnorm-unfused", "torch"), 8,
                    "copy", ("torch",)),
    "gn_add_relu": ((32, 64, 56, 56), "float32", ("cnorm", "cnorm-unfused", "torch"), 8,
                    "copy", ("torch",)),
    # half precision, forward + backward: cnorm in the half type against cnorm in float32
    # (the target) and torch in the half type (float32 parameters, as cnorm's)
    "bn2d_f16": ((32, 64, 56, 56), "float16", ("cnorm", "cnorm-f32", "torch"), 5, "copy",
                 ("cnorm-f32",)),
    "bn2d_bf16": ((32, 64, 56, 56), "bfloat16", ("cnorm", "cnorm-f32", "torch"), 5, "copy",
                  ("cnorm-f32",)),
    "ln_bf16": ((64, 196, 768), "bfloat16", ("cnorm", "cnorm-f32", "torch"), 5, "copy",
                ("cnorm-f32",)),
    # small calls (issue 24): inputs so small that a call costs its Python, not its data
    "bn1d_call": ((8, 16), "float32", ("cnorm", "torch", "numpy"), 2, "copy", ("torch",)),
    "bn_functional_call": ((8, 16), "float32", ("cnorm", "torch", "numpy"), 2, "copy",
                           ("torch",)),
    "standardize_call": ((64, 16), "float32", ("cnorm", "sklearn", "numpy"), 2, "copy",
                         ("numpy",)),
    "normalize_image_call": ((1, 32, 32, 3), "uint8", ("cnorm", "torch", "cv2", "numpy"), 5,
                             "copy", ("cv2",)),
    "moments_call": ((2, 32, 32, 3), "uint8", ("cnorm", "numpy"), 1, "read", ("numpy",)),
}
# the small-call cases, reported in µs per call
CALLS = {"bn1d_call", "bn_functional_call", "standardize_call", "normalize_image_call",
         "moments_call"}
QUICK = {"normalize_images": (2, 32, 32, 3), "moments": (2, 32, 32, 3),
         "moments_f32": (2, 32, 32, 3),
         "standardize": (64, 16), "bn_add_relu": (4, 64, 8, 8), "gn_add_relu": (4, 64, 8, 8),
         "bn2d_f16": (4, 64, 8, 8), "bn2d_bf16": (4, 64, 8, 8), "ln_bf16": (8, 16, 64),
         **{name: CASES[name][0] for name in CALLS}}
LABELS = {"normalize_images": "uint8 NHWC -> float32 NCHW", "moments": "per-channel mean + std",
          "moments_f32": "per-channel mean + std, float32",
          "standardize": "transform float32",
          "bn_add_relu": "BatchNorm2d + residual + relu, fwd + bwd",
          "gn_add_relu": "GroupNorm(32) + residual + relu, fwd + bwd",
          "bn2d_f16": "BatchNorm2d fwd + bwd, float16",
          "bn2d_bf16": "BatchNorm2d fwd + bwd, bfloat16",
          "ln_bf16": "LayerNorm(768) fwd + bwd, bfloat16",
          "bn1d_call": "BatchNorm1d(16) layer, training forward",
          "bn_functional_call": "batch_norm functional, training forward",
          "standardize_call": "Standardizer.transform",
          "normalize_image_call": "normalize_images, one image",
          "moments_call": "Moments.update"}
HALF = {"bn2d_f16", "bn2d_bf16", "ln_bf16"}


def dtype_of(name: str) -> np.dtype[Any]:
    """A case's input dtype (bfloat16 is ml_dtypes' type, imported only for those cases)."""
    kind: Any = CASES[name][1]
    if kind == "bfloat16":
        import ml_dtypes
        kind = ml_dtypes.bfloat16
    dt: np.dtype[Any] = np.dtype(kind)
    return dt


def module_of(impl: str) -> str:
    """The module an implementation imports: "cnorm-unfused" and "cnorm-f32" are cnorm."""
    return impl.split("-")[0]


def make_input(name: str, shape: Optional[Sequence[int]] = None) -> Array:
    shape, dtype = tuple(shape or CASES[name][0]), dtype_of(name)
    rng = np.random.default_rng(0)
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return (3.0 + 2.0 * rng.standard_normal(shape, dtype=np.float32)).astype(dtype)


def set_threads(impl: str, lib: Any, n: int) -> None:
    """The library's own thread setting (NumPy and scikit-learn's transform run on one)."""
    if lib is None or impl == "copy":
        return
    if module_of(impl) in ("cnorm", "torch"):
        lib.set_num_threads(n)
    elif impl == "cnorm.torch":  # its kernels follow torch's setting
        import torch

        torch.set_num_threads(n)
    elif impl == "cv2":
        lib.setNumThreads(n)


def make_runner(impl: str, name: str, x: Array, lib: Any) -> Runner:
    """A zero-argument callable doing case ``name`` once with ``impl`` (cnorm, torch, cv2,
    sklearn or numpy; ``lib`` the imported module, None for numpy)."""
    if name in ("bn1d_call", "bn_functional_call"):
        return _small_bn_runner(impl, name, x, lib)
    if name == "moments_call":
        if impl == "cnorm":
            moments = lib.Moments(channel_axis=-1)
            return lambda: moments.update(x)
        return lambda: (x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2)))
    name = {"standardize_call": "standardize",
            "normalize_image_call": "normalize_images"}.get(name, name)
    if name == "normalize_images":
        return _normalize_runner(impl, x, lib)
    if name in ("bn_add_relu", "gn_add_relu"):
        return _block_runner(impl, name, x, lib)
    if name in HALF:
        return _half_runner(impl, name, x, lib)
    if name in ("moments", "moments_f32"):
        if impl == "cnorm":
            return lambda: lib.Moments.from_array(x, channel_axis=-1).std
        return lambda: (x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2)))
    if name == "standardize":
        if impl == "cnorm":
            s = lib.Standardizer().fit(x)
        elif impl == "sklearn":
            from sklearn.preprocessing import StandardScaler
            s = StandardScaler().fit(x)
        else:
            mean, std = x.mean(axis=0), x.std(axis=0)
            return lambda: (x - mean) / std
        return lambda: s.transform(x)
    raise ValueError(name)


def _small_bn_runner(impl: str, name: str, x: Array, lib: Any) -> Runner:
    """A training forward of batch norm on a small input: the layer (BatchNorm1d) or the
    functional form (running statistics updated in place); torch with nothing requiring a
    gradient (no graph recorded: the least it charges), NumPy as
    cases.numpy_train_forward."""
    C = x.shape[1]
    weight, bias = np.ones(C, np.float32), np.zeros(C, np.float32)
    running = np.zeros(C, np.float32), np.ones(C, np.float32)
    if impl == "torch":
        torch = lib
        xt = torch.from_numpy(x)
        if name == "bn1d_call":  # parameters without gradients: no graph is recorded
            layer = torch.nn.BatchNorm1d(C).requires_grad_(False)
            return lambda: layer(xt)
        w, b, rm, rv = (torch.from_numpy(a) for a in (weight, bias, *running))
        return lambda: torch.nn.functional.batch_norm(xt, rm, rv, w, b, True)
    if impl == "cnorm":
        if name == "bn1d_call":
            layer = lib.BatchNorm1d(C)
            return lambda: layer(x)
        return lambda: lib.batch_norm(x, running[0], running[1], weight, bias, True)
    from cnorm.bench.cases import numpy_train_forward  # the worker runs cases.py as __main__

    return lambda: numpy_train_forward(x, weight, bias)


def _normalize_runner(impl: str, x: Array, lib: Any) -> Runner:
    N, H, W, C = x.shape
    if impl == "cnorm":
        out = np.empty((N, C, H, W), np.float32)  # a loader reuses its batch buffer
        return lambda: lib.normalize_images(x, MEAN, STD, out=out)
    if impl == "torch":  # torchvision's to_dtype(scale=True) + normalize, on NCHW output
        torch = lib
        xt = torch.from_numpy(x)
        m = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        s = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)

        def run() -> Any:
            y = xt.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
            return y.mul_(1.0 / 255.0).sub_(m).div_(s)
        return run
    if impl == "cv2":  # one scale factor: the mean is subtracted, the std not applied
        images = list(x)
        return lambda: lib.dnn.blobFromImages(images, 1.0 / 255.0, (W, H),
                                              tuple(MEAN * 255.0), False, False)
    m32, s32 = MEAN.astype(np.float32), STD.astype(np.float32)

    def numpy_run() -> Array:
        y = x.astype(np.float32)
        y *= np.float32(1.0 / 255.0)
        y -= m32
        y /= s32
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2))
    return numpy_run


def _block_runner(impl: str, name: str, x: Array, lib: Any) -> Runner:
    """A training step of norm -> + residual -> relu: cnorm's fused layer, cnorm's norm with
    the add and relu in NumPy, or torch's sequence under autograd."""
    rng = np.random.default_rng(1)
    r = rng.standard_normal(x.shape, dtype=np.float32)
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    C = x.shape[1]
    if impl == "torch":
        torch = lib
        norm = torch.nn.GroupNorm(32, C) if name == "gn_add_relu" else torch.nn.BatchNorm2d(C)
        xt = torch.from_numpy(x).requires_grad_()
        rt = torch.from_numpy(r).requires_grad_()
        dyt = torch.from_numpy(dy)
        return lambda: torch.relu(norm(xt) + rt).backward(dyt)
    if impl == "cnorm":
        block = lib.GroupNormAct(32, C) if name == "gn_add_relu" else lib.BatchNormAct2d(C)
        return lambda: (block(x, r), block.backward(dy), block.grad_residual)
    norm = lib.GroupNorm(32, C) if name == "gn_add_relu" else lib.BatchNorm2d(C)

    def unfused() -> Any:
        y = np.maximum(norm(x) + r, 0)
        g = dy * (y > 0)  # the relu's gradient, which is also the residual's
        return norm.backward(g), g
    return unfused


def _half_runner(impl: str, name: str, x: Array, lib: Any) -> Runner:
    """A training step of one norm layer in a half type: cnorm in that type, cnorm on the
    same values in float32, or torch in that type (float32 parameters) under autograd."""
    dy = np.random.default_rng(1).standard_normal(x.shape, dtype=np.float32).astype(x.dtype)
    ln = name.startswith("ln")
    if impl == "torch":
        torch = lib
        norm = torch.nn.LayerNorm(x.shape[-1]) if ln else torch.nn.BatchNorm2d(x.shape[1])
        tdt = {"float16": torch.float16, "bfloat16": torch.bfloat16}[x.dtype.name]
        xt = torch.from_numpy(x.astype(np.float32)).to(tdt).requires_grad_()
        dyt = torch.from_numpy(dy.astype(np.float32)).to(tdt)
        return lambda: norm(xt).backward(dyt)
    if impl == "cnorm-f32":
        x, dy = x.astype(np.float32), dy.astype(np.float32)
    norm = lib.LayerNorm(x.shape[-1], dtype=x.dtype) if ln else lib.BatchNorm2d(x.shape[1],
                                                                              dtype=x.dtype)
    return lambda: (norm(x), norm.backward(dy))
