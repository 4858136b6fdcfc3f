"""backward against central finite differences in float64, for every layer kind in training and
eval mode, and for the functional backward forms."""
import copy

import numpy as np
import pytest

import cnorm
from cnorm.testing import KINDS, make, make_input, numeric_grad

SHAPE = {2: (4, 3), 3: (3, 4, 5), 4: (2, 4, 3, 5), 5: (2, 2, 3, 2, 2)}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", list(KINDS))
def test_backward_matches_finite_differences(rng, kind, training):
    shape = SHAPE[KINDS[kind][0][-1]]
    layer = make(kind, shape, np.float64, rng)
    if getattr(layer, "running_mean", None) is not None:
        layer.running_mean[...] = rng.uniform(-1, 1, layer.running_mean.shape)
        layer.running_var[...] = rng.uniform(0.5, 2, layer.running_var.shape)
    layer.train(training)
    x = make_input(rng, shape, np.float64, offset=1.0)
    R = rng.standard_normal(shape)  # loss = sum(y * R), so dL/dy = R

    def loss():
        return float(np.sum(copy.deepcopy(layer)(x) * R))  # a copy: running stats stay put

    probe = copy.deepcopy(layer)
    probe(x)
    dx = probe.backward(R)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-7)
    for name in ("weight", "bias"):
        p = getattr(layer, name, None)
        if p is not None:
            np.testing.assert_allclose(getattr(probe, "grad_" + name), numeric_grad(loss, p),
                                       rtol=1e-6, atol=1e-7)


def test_functional_backward_forms_match_finite_differences(rng):
    x = make_input(rng, (3, 4, 5), np.float64)
    w, b = rng.uniform(0.5, 2, 4), rng.uniform(-1, 1, 4)
    w5, b5 = rng.uniform(0.5, 2, 5), rng.uniform(-1, 1, 5)
    R = rng.standard_normal(x.shape)
    rm, rv = np.zeros(4), np.ones(4)
    forms = [  # (forward(), backward() -> grads, arrays the grads are with respect to)
        (lambda: cnorm.batch_norm(x, rm.copy(), rv.copy(), w, b, training=True),
         lambda: cnorm.batch_norm_backward(R, x, rm, rv, w, b, training=True), (x, w, b)),
        (lambda: cnorm.layer_norm(x, 5, w5, b5),
         lambda: cnorm.layer_norm_backward(R, x, 5, w5, b5), (x, w5, b5)),
        (lambda: cnorm.rms_norm(x, 5, w5), lambda: cnorm.rms_norm_backward(R, x, 5, w5),
         (x, w5)),
        (lambda: cnorm.group_norm(x, 2, w, b),
         lambda: cnorm.group_norm_backward(R, x, 2, w, b), (x, w, b)),
        (lambda: cnorm.instance_norm(x, weight=w, bias=b),
         lambda: cnorm.instance_norm_backward(R, x, weight=w, bias=b), (x, w, b)),
    ]
    for forward, backward, wrt in forms:
        for got, v in zip(backward(), wrt):
            np.testing.assert_allclose(got, numeric_grad(lambda: float(np.sum(forward() * R)),
                                                         v), rtol=1e-6, atol=1e-7)
