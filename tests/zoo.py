"""Every layer of cnorm with its float64 reference, for the robustness and property tests.

``make(kind, shape, dtype)`` builds a layer for an input of ``shape`` with non-trivial
parameters; ``reference(kind, layer, x, dy)`` gives the float64 (y, dx) of a training-mode
forward and backward (batch statistics), computed by the formulas of ``reference.py``.
``stat_groups(kind, shape)`` labels each element with the statistics it belongs to, so that
tests can say which outputs one bad value may reach.
"""
import numpy as np

import cnorm
from reference import bn_backward, bn_forward, channel_axes, group_norm_ref, layer_norm_ref

# kind: (allowed input ndims, builder from (shape, dtype))
KINDS = {
    "bn1d": ((2, 3), lambda s, dt: cnorm.BatchNorm1d(s[1], dtype=dt)),
    "bn2d": ((4,), lambda s, dt: cnorm.BatchNorm2d(s[1], dtype=dt)),
    "bn3d": ((5,), lambda s, dt: cnorm.BatchNorm3d(s[1], dtype=dt)),
    "ln": ((2, 3, 4, 5), lambda s, dt: cnorm.LayerNorm(s[-1], dtype=dt)),
    "ln2": ((3, 4, 5), lambda s, dt: cnorm.LayerNorm(s[-2:], dtype=dt)),
    "rms": ((2, 3, 4, 5), lambda s, dt: cnorm.RMSNorm(s[-1], dtype=dt)),
    "gn": ((3, 4, 5), lambda s, dt: cnorm.GroupNorm(groups(s[1]), s[1], dtype=dt)),
    "in1d": ((3,), lambda s, dt: cnorm.InstanceNorm1d(s[1], affine=True,
                                                      track_running_stats=True, dtype=dt)),
    "in2d": ((4,), lambda s, dt: cnorm.InstanceNorm2d(s[1], affine=True,
                                                      track_running_stats=True, dtype=dt)),
    "in3d": ((5,), lambda s, dt: cnorm.InstanceNorm3d(s[1], affine=True,
                                                      track_running_stats=True, dtype=dt)),
}
# a 4-D kind per family, for tests that take one input shape for all
FAMILY_4D = ["bn2d", "ln", "ln2", "rms", "gn", "in2d"]


def groups(C):
    """The largest group count below C that divides it (1 for C = 1): groups of >1 channel."""
    return max([g for g in range(1, C) if C % g == 0] or [1])


def make(kind, shape, dtype, rng=None):
    layer = KINDS[kind][1](shape, dtype)
    rng = rng or np.random.default_rng(0)
    for name in ("weight", "bias"):
        p = getattr(layer, name, None)
        if p is not None:
            p[...] = rng.uniform(0.5, 1.5, p.shape) if name == "weight" else rng.normal(size=p.shape)
    return layer


def reference(kind, layer, x, dy):
    """float64 (y, dx) of the training forward and backward of ``layer`` on x."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    w = None if layer.weight is None else np.asarray(layer.weight, np.float64)
    b = None if getattr(layer, "bias", None) is None else np.asarray(layer.bias, np.float64)
    if kind.startswith("bn"):
        ax = channel_axes(x)
        mean, var = x.mean(axis=ax), x.var(axis=ax)
        return (bn_forward(x, mean, var, w, b, layer.eps),
                bn_backward(x, dy, mean, var, w, layer.eps, True)[0])
    if kind in ("ln", "ln2", "rms"):
        k = 2 if kind == "ln2" else 1
        eps = layer.eps if layer.eps is not None else float(np.finfo(layer.dtype).eps)
        return layer_norm_ref(x, dy, k, w, b, eps, rms=kind == "rms")[:2]
    G = layer.num_groups if kind == "gn" else x.shape[1]
    return group_norm_ref(x, dy, G, w, b, layer.eps)[:2]


def stat_groups(kind, shape):
    """An int array of ``shape``: equal labels share statistics (batch norm: a channel; row
    norms: a row; group norm: a (sample, group); instance norm: a (sample, channel))."""
    idx = np.indices(shape)
    if kind.startswith("bn"):
        return idx[1]
    if kind in ("ln", "rms"):
        return np.ravel_multi_index(tuple(idx[:-1]), shape[:-1]) if len(shape) > 1 else 0 * idx[0]
    if kind == "ln2":
        return np.ravel_multi_index(tuple(idx[:-2]), shape[:-2])
    if kind == "gn":
        G = groups(shape[1])
        return idx[0] * G + idx[1] // (shape[1] // G)
    return idx[0] * shape[1] + idx[1]


def state(layer):
    """Copies of everything a call may change: parameters, running statistics, counters,
    mode and the cached forward."""
    out = {k: (v.copy() if isinstance(v, np.ndarray) else v)
           for k, v in vars(layer).items() if k != "_saved"}
    out["_saved"] = id(getattr(layer, "_saved", None))
    return out


def same_state(a, b):
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, np.ndarray):
            if not (isinstance(y, np.ndarray) and x.dtype == y.dtype and x.shape == y.shape
                    and x.tobytes() == y.tobytes()):
                return False
        elif x != y and not (x is None and y is None):
            return False
    return True
