"""The registry of layer kinds every concern's tests run over.

``KINDS[kind]``: the input ranks it takes and a builder from (shape, dtype). ``make`` builds a
layer with non-trivial parameters; ``reference`` gives the float64 (y, dx) of its training
forward and backward (batch statistics, by the formulas of formulas.py); ``torch_twin`` the
torch.nn layer with the same arguments and state; ``stat_groups`` labels each element with the
statistics it belongs to; ``shape_for`` a small input shape of the kind's largest rank.
"""
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

import cnorm

from .formulas import bn_backward, bn_forward, channel_axes, group_norm_ref, layer_norm_ref


def eps_of(dtype: Any) -> float:
    """The machine epsilon of a float dtype, bfloat16's (7 stored mantissa bits) included:
    torch's RMSNorm eps=None."""
    return 2.0 ** -7 if np.dtype(dtype).name == "bfloat16" else float(np.finfo(dtype).eps)


def groups(C: int) -> int:
    """The largest group count below C that divides it (1 for C = 1): groups of >1 channel."""
    return max([g for g in range(1, C) if C % g == 0] or [1])


def _instance(dim: int) -> Callable[[Tuple[int, ...], Any], Any]:
    return lambda s, dt: getattr(cnorm, f"InstanceNorm{dim}d")(
        s[1], affine=True, track_running_stats=True, dtype=dt)


# kind -> (the input ranks it takes, a builder from (shape, dtype))
KINDS: Dict[str, Tuple[Tuple[int, ...], Callable[[Tuple[int, ...], Any], Any]]] = {
    "bn1d": ((2, 3), lambda s, dt: cnorm.BatchNorm1d(s[1], dtype=dt)),
    "bn2d": ((4,), lambda s, dt: cnorm.BatchNorm2d(s[1], dtype=dt)),
    "bn3d": ((5,), lambda s, dt: cnorm.BatchNorm3d(s[1], dtype=dt)),
    "ln": ((2, 3, 4, 5), lambda s, dt: cnorm.LayerNorm(s[-1], dtype=dt)),
    "ln2": ((3, 4, 5), lambda s, dt: cnorm.LayerNorm(s[-2:], dtype=dt)),
    "rms": ((2, 3, 4, 5), lambda s, dt: cnorm.RMSNorm(s[-1], dtype=dt)),
    "gn": ((3, 4, 5), lambda s, dt: cnorm.GroupNorm(groups(s[1]), s[1], dtype=dt)),
    "in1d": ((3,), _instance(1)),
    "in2d": ((4,), _instance(2)),
    "in3d": ((5,), _instance(3)),
}
# a 4-D kind per family, for tests that take one input shape for all
FAMILY_4D = ["bn2d", "ln", "ln2", "rms", "gn", "in2d"]


def shape_for(kind: str) -> Tuple[int, ...]:
    return {2: (6, 5), 3: (4, 6, 9), 4: (3, 4, 6, 7), 5: (2, 4, 3, 4, 5)}[KINDS[kind][0][-1]]


def make(kind: str, shape: Tuple[int, ...], dtype: Any,
         rng: Optional[np.random.Generator] = None) -> Any:
    layer = KINDS[kind][1](shape, dtype)
    rng = rng or np.random.default_rng(0)
    for name in ("weight", "bias"):
        p = getattr(layer, name, None)
        if p is not None:
            p[...] = (rng.uniform(0.5, 1.5, p.shape) if name == "weight"
                      else rng.normal(size=p.shape))
    return layer


def reference(kind: str, layer: Any, x: Any, dy: Any) -> Tuple[Any, Any]:
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
        eps = layer.eps if layer.eps is not None else eps_of(layer.dtype)
        y, dx, _, _ = layer_norm_ref(x, dy, k, w, b, eps, rms=kind == "rms")
        return y, dx
    G = layer.num_groups if kind == "gn" else x.shape[1]
    y, dx, *_ = group_norm_ref(x, dy, G, w, b, layer.eps)
    return y, dx


def torch_twin(kind: str, layer: Any, torch: Any) -> Any:
    """torch.nn's layer built with ``layer``'s arguments, holding its parameters and buffers."""
    # the parameters' dtype: float32 for half-precision layers (torch runs them mixed)
    dt = torch.float64 if layer.dtype == np.float64 else torch.float32
    name = type(layer).__name__
    if kind.startswith("bn") or kind.startswith("in"):
        twin = getattr(torch.nn, name)(layer.num_features, eps=layer.eps,
                                       momentum=layer.momentum, affine=layer.affine,
                                       bias=layer.bias is not None or not layer.affine,
                                       track_running_stats=layer.track_running_stats, dtype=dt)
    elif kind == "gn":
        twin = torch.nn.GroupNorm(layer.num_groups, layer.num_channels, eps=layer.eps,
                                  affine=layer.affine, bias=layer.bias is not None, dtype=dt)
    elif kind == "rms":
        twin = torch.nn.RMSNorm(list(layer.normalized_shape), eps=layer.eps,
                                elementwise_affine=layer.elementwise_affine, dtype=dt)
    else:
        twin = torch.nn.LayerNorm(layer.normalized_shape, eps=layer.eps,
                                  elementwise_affine=layer.elementwise_affine,
                                  bias=layer.bias is not None, dtype=dt)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                          layer.state_dict().items()})
    return twin


def stat_groups(kind: str, shape: Tuple[int, ...]) -> Any:
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
