"""cnorm.fold_batch_norm: folded linear and convolution layers compute what the layer followed
by the eval-mode batch norm computes; the same weights as torch's fuse_*_bn_weights."""
import numpy as np
import pytest

import cnorm


def trained_bn(cls, C, rng, dtype=np.float32, **kw):
    bn = cls(C, dtype=dtype, **kw)
    for _ in range(3):  # running statistics and parameters that are not the defaults
        bn(rng.normal(2.0, 3.0, (8, C) + ((5,) if cls is cnorm.BatchNorm1d else (4, 4)))
           .astype(dtype))
    if bn.weight is not None:
        bn.weight[...] = rng.uniform(0.5, 2.0, C)
    if bn.bias is not None:
        bn.bias[...] = rng.uniform(-1.0, 1.0, C)
    return bn.eval()


def conv2d(x, w, b):
    """A plain 'valid' convolution, (N, I, H, W) * (O, I, kh, kw)."""
    N, I, H, W = x.shape
    O, _, kh, kw = w.shape
    cols = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return np.einsum("nihwkl,oikl->nohw", cols, w) + b.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_folded_conv_matches_conv_then_bn(rng, with_bias, affine):
    bn = trained_bn(cnorm.BatchNorm2d, 6, rng, np.float64, affine=affine)
    w = rng.standard_normal((6, 3, 3, 3))
    b = rng.standard_normal(6) if with_bias else None
    x = rng.standard_normal((2, 3, 9, 9))
    want = bn(conv2d(x, w, np.zeros(6) if b is None else b))
    fw, fb = cnorm.fold_batch_norm(w, b, bn)
    assert fw.shape == w.shape and fb.shape == (6,)
    assert np.allclose(conv2d(x, fw, fb), want, rtol=1e-12, atol=1e-12)


def test_folded_linear_matches_linear_then_bn(rng):
    bn = trained_bn(cnorm.BatchNorm1d, 5, rng, momentum=None)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    x = rng.standard_normal((10, 7)).astype(np.float32)
    fw, fb = cnorm.fold_batch_norm(w, b, bn)
    assert fw.dtype == fb.dtype == np.float32
    want = bn((x @ w.T + b).astype(np.float32))
    assert np.allclose(x @ fw.T + fb, want, rtol=1e-5, atol=1e-5)


def test_same_weights_as_torch(rng):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

    bn = trained_bn(cnorm.BatchNorm2d, 4, rng, np.float64)
    t = {k: torch.from_numpy(np.array(v)) for k, v in bn.state_dict().items()}
    w, b = rng.standard_normal((4, 2, 3, 3)), rng.standard_normal(4)
    fw, fb = cnorm.fold_batch_norm(w, b, bn)
    tw, tb = fuse_conv_bn_weights(torch.from_numpy(w), torch.from_numpy(b), t["running_mean"],
                                  t["running_var"], bn.eps, t["weight"], t["bias"])
    assert np.allclose(fw, tw.detach().numpy(), rtol=1e-13) and np.allclose(
        fb, tb.detach().numpy(), rtol=1e-13)
    lw = rng.standard_normal((4, 3))
    fw, fb = cnorm.fold_batch_norm(lw, None, bn)
    tw, tb = fuse_linear_bn_weights(torch.from_numpy(lw), torch.zeros(4, dtype=torch.float64),
                                    t["running_mean"], t["running_var"], bn.eps, t["weight"],
                                    t["bias"])
    assert np.allclose(fw, tw.detach().numpy(), rtol=1e-13) and np.allclose(
        fb, tb.detach().numpy(), rtol=1e-13)


def test_what_cannot_be_folded(rng):
    w = rng.standard_normal((4, 3))
    bn = cnorm.BatchNorm1d(4)
    with pytest.raises(ValueError, match="eval-mode"):
        cnorm.fold_batch_norm(w, None, bn)
    with pytest.raises(ValueError, match="running statistics"):
        cnorm.fold_batch_norm(w, None, cnorm.BatchNorm1d(4, track_running_stats=False).eval())
    with pytest.raises(ValueError, match="5 features"):
        cnorm.fold_batch_norm(w, None, cnorm.BatchNorm1d(5).eval())
    with pytest.raises(ValueError, match="bias"):
        cnorm.fold_batch_norm(w, np.zeros(3), bn.eval())
    with pytest.raises(TypeError, match="batch-norm"):
        cnorm.fold_batch_norm(w, None, cnorm.LayerNorm(4))

    class WithActivation:  # what a fused norm + activation layer looks like to the fold
        act = "relu"
    with pytest.raises(ValueError, match="activation"):
        cnorm.fold_batch_norm(w, None, WithActivation())
