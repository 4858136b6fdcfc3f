"""Independent float64 NumPy references for the tests (plain textbook formulas, no cnorm code)."""
import numpy as np


def channel_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def bcast(v, x):
    return np.asarray(v, dtype=np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))


def bn_forward(x, mean, var, weight, bias, eps):
    x = np.asarray(x, dtype=np.float64)
    y = (x - bcast(mean, x)) / np.sqrt(bcast(var, x) + eps)
    if weight is not None:
        y = y * bcast(weight, x)
    if bias is not None:
        y = y + bcast(bias, x)
    return y


def bn_backward(x, dy, mean, var, weight, eps, batch_stats):
    """Staged chain rule (through var and mean when the batch statistics were used)."""
    x = np.asarray(x, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    ax = channel_axes(x)
    M = x.size // x.shape[1]
    mu, v = bcast(mean, x), bcast(var, x)
    xmu = x - mu
    std_inv = 1.0 / np.sqrt(v + eps)
    xhat = xmu * std_inv
    gamma = 1.0 if weight is None else bcast(weight, x)
    dxhat = dy * gamma
    if batch_stats:
        dvar = np.sum(dxhat * xmu, axis=ax, keepdims=True) * -0.5 * std_inv ** 3
        dmean = (np.sum(-dxhat * std_inv, axis=ax, keepdims=True)
                 + dvar * np.sum(-2.0 * xmu, axis=ax, keepdims=True) / M)
        dx = dxhat * std_inv + dvar * 2.0 * xmu / M + dmean / M
    else:
        dx = dxhat * std_inv
    return dx, np.sum(dy * xhat, axis=ax), np.sum(dy, axis=ax)


class RefBatchNorm:
    """float64 model of torch.nn.BatchNormNd's state machine."""

    def __init__(self, C, eps=1e-5, momentum=0.1, affine=True, bias=True, track=True):
        self.eps, self.momentum, self.track = eps, momentum, track
        self.weight = np.ones(C) if affine else None
        self.bias = np.zeros(C) if affine and bias else None
        self.running_mean = np.zeros(C) if track else None
        self.running_var = np.ones(C) if track else None
        self.num_batches_tracked = 0
        self.training = True

    def forward(self, x):
        x = np.asarray(x, dtype=np.float64)
        ax = channel_axes(x)
        if self.training or not self.track:
            mean, var = x.mean(axis=ax), x.var(axis=ax)
            self.batch_stats = True
            if self.training and self.track:
                self.num_batches_tracked += 1
                f = (1.0 / self.num_batches_tracked if self.momentum is None
                     else self.momentum)
                n = x.size // x.shape[1]
                self.running_mean = (1 - f) * self.running_mean + f * mean
                self.running_var = (1 - f) * self.running_var + f * var * n / (n - 1)
        else:
            mean, var = self.running_mean, self.running_var
            self.batch_stats = False
        self.saved = (x, mean, var)
        return bn_forward(x, mean, var, self.weight, self.bias, self.eps)

    def backward(self, dy):
        x, mean, var = self.saved
        return bn_backward(x, dy, mean, var, self.weight, self.eps, self.batch_stats)


def rel_err(a, ref):
    """max |a - ref| / max(|ref|, tiny): a scale-free error."""
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ref.size == 0:
        return 0.0
    return float(np.max(np.abs(a - ref)) / max(np.max(np.abs(ref)), 1e-300))


def channels_last(x):
    """The same logical array with NHWC (channels-last) memory."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)).transpose(
        (0, x.ndim - 1) + tuple(range(1, x.ndim - 1)))
