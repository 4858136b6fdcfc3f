"""Central finite differences in float64 against backward, in training and eval mode."""
import copy

import numpy as np
import pytest
from conftest import make_input

import cnorm


def numeric_grad(f, v, h=1e-6):
    g = np.zeros_like(v)
    it = np.nditer(v, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = v[i]
        v[i] = old + h
        fp = f()
        v[i] = old - h
        fm = f()
        v[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4, 5), (2, 2, 3, 2, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_finite_differences(rng, shape, training):
    C = shape[1]
    layer = {2: cnorm.BatchNorm1d, 4: cnorm.BatchNorm2d, 5: cnorm.BatchNorm3d}[len(shape)](
        C, dtype=np.float64)
    layer.weight[...] = rng.uniform(0.5, 2, C)
    layer.bias[...] = rng.uniform(-1, 1, C)
    layer.running_mean[...] = rng.uniform(-1, 1, C)
    layer.running_var[...] = rng.uniform(0.5, 2, C)
    layer.train(training)
    x = make_input(rng, shape, np.float64, offset=1.0)
    R = rng.standard_normal(shape)  # loss = sum(y * R), so dL/dy = R

    def loss():
        return float(np.sum(copy.deepcopy(layer)(x) * R))  # a copy: running stats stay put

    probe = copy.deepcopy(layer)
    probe(x)
    dx = probe.backward(R)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-7)
    for name, grad in (("weight", probe.grad_weight), ("bias", probe.grad_bias)):
        np.testing.assert_allclose(grad, numeric_grad(loss, getattr(layer, name)),
                                   rtol=1e-6, atol=1e-7)


def test_functional_backward_finite_differences(rng):
    x = make_input(rng, (3, 2, 4), np.float64)
    w, b = rng.uniform(0.5, 2, 2), rng.uniform(-1, 1, 2)
    R = rng.standard_normal(x.shape)
    rm, rv = np.zeros(2), np.ones(2)

    def loss():
        return float(np.sum(cnorm.batch_norm(x, rm.copy(), rv.copy(), w, b, training=True) * R))

    dx, gw, gb = cnorm.batch_norm_backward(R, x, rm, rv, w, b, training=True)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, numeric_grad(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, numeric_grad(loss, b), rtol=1e-6, atol=1e-7)
