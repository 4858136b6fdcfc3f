"""What cnorm's tests share, importable like ``numpy.testing``: float64 reference formulas of
every norm (``formulas``), the registry of layer kinds the tests run over with their references
and torch twins (``layers``), and inputs, layouts, error measures and layer state (``arrays``).
Not imported by ``import cnorm``; ``layers.torch_twin`` needs torch."""
from .arrays import (
    HALVES,
    TOL,
    channels_last,
    check,
    in_layout,
    isolated,
    make_input,
    numeric_grad,
    rel_err,
    same_state,
    state,
)
from .formulas import (
    RefBatchNorm,
    RefInstanceNorm,
    bcast,
    bn_backward,
    bn_forward,
    channel_axes,
    group_norm_ref,
    layer_norm_ref,
    rows_backward,
    rows_forward,
)
from .layers import (
    FAMILY_4D,
    KINDS,
    eps_of,
    groups,
    make,
    reference,
    shape_for,
    stat_groups,
    torch_twin,
)

__all__ = ["HALVES", "TOL", "channels_last", "check", "in_layout", "isolated", "make_input",
           "numeric_grad", "rel_err", "same_state", "state", "RefBatchNorm", "RefInstanceNorm",
           "bcast", "bn_backward", "bn_forward", "channel_axes", "group_norm_ref",
           "layer_norm_ref", "rows_backward", "rows_forward", "FAMILY_4D", "KINDS", "eps_of",
           "groups", "make", "reference", "shape_for", "stat_groups", "torch_twin"]
