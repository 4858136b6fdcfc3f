"""Independent float64 NumPy references of every norm: plain textbook formulas, no cnorm code,
so a test that compares a kernel with them checks it against arithmetic, not against itself."""
from typing import Any, Optional, Tuple

import numpy as np

Array = Any  # the formulas take arrays, None where a parameter is absent, and scalars


def channel_axes(x: Array) -> Tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def bcast(v: Array, x: Array) -> Array:
    return np.asarray(v, dtype=np.float64).reshape((1, -1) + (1,) * (x.ndim - 2))


def bn_forward(x: Array, mean: Array, var: Array, weight: Array, bias: Array,
               eps: float) -> Array:
    x = np.asarray(x, dtype=np.float64)
    y = (x - bcast(mean, x)) / np.sqrt(bcast(var, x) + eps)
    if weight is not None:
        y = y * bcast(weight, x)
    if bias is not None:
        y = y + bcast(bias, x)
    return y


def bn_backward(x: Array, dy: Array, mean: Array, var: Array, weight: Array, eps: float,
                batch_stats: bool) -> Tuple[Array, Array, Array]:
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

    weight: Array
    bias: Array
    running_mean: Array
    running_var: Array
    saved: Tuple[Array, Array, Array]

    def __init__(self, C: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, bias: bool = True, track: bool = True) -> None:
        self.eps, self.momentum, self.track = eps, momentum, track
        self.weight = np.ones(C) if affine else None
        self.bias = np.zeros(C) if affine and bias else None
        self.running_mean = np.zeros(C) if track else None
        self.running_var = np.ones(C) if track else None
        self.num_batches_tracked = 0
        self.training = True

    def eval(self) -> "RefBatchNorm":
        self.training = False
        return self

    def forward(self, x: Array) -> Array:
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

    def backward(self, dy: Array) -> Tuple[Array, Array, Array]:
        x, mean, var = self.saved
        return bn_backward(x, dy, mean, var, self.weight, self.eps, self.batch_stats)


# ---------------------------------------------------------------------------------------------
# Row-wise norms: every layer below normalizes the rows of a 2-D (rows, L) float64 view.
# ---------------------------------------------------------------------------------------------

def rows_forward(X: Array, eps: float, rms: bool = False) -> Array:
    """Per-row normalized values x_hat (textbook formulas)."""
    if rms:
        return X / np.sqrt(np.mean(X * X, axis=1, keepdims=True) + eps)
    mu = X.mean(axis=1, keepdims=True)
    return (X - mu) / np.sqrt(X.var(axis=1, keepdims=True) + eps)


def rows_backward(X: Array, G: Array, eps: float, rms: bool = False) -> Array:
    """dX from G = dL/dx_hat, by the staged chain rule through the row statistics."""
    L = X.shape[1]
    if rms:
        ms = np.mean(X * X, axis=1, keepdims=True) + eps
        dms = np.sum(G * X, axis=1, keepdims=True) * -0.5 * ms ** -1.5
        return G / np.sqrt(ms) + dms * 2.0 * X / L
    mu = X.mean(axis=1, keepdims=True)
    xmu = X - mu
    inv = 1.0 / np.sqrt(X.var(axis=1, keepdims=True) + eps)
    dvar = np.sum(G * xmu, axis=1, keepdims=True) * -0.5 * inv ** 3
    dmean = np.sum(-G * inv, axis=1, keepdims=True) + dvar * np.sum(-2.0 * xmu, axis=1,
                                                                     keepdims=True) / L
    return G * inv + dvar * 2.0 * xmu / L + dmean / L


def layer_norm_ref(x: Array, dy: Array, k: int, weight: Array, bias: Array, eps: float,
                   rms: bool = False) -> Tuple[Array, Array, Array, Array]:
    """(y, dx, grad_weight, grad_bias) of layer norm (or RMS norm) over the last k axes."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    pshape = x.shape[x.ndim - k:]
    w = np.ones(pshape) if weight is None else np.asarray(weight, np.float64)
    X = x.reshape(-1, int(np.prod(pshape)))
    xhat = rows_forward(X, eps, rms).reshape(x.shape)
    y = xhat * w + (0.0 if bias is None else np.asarray(bias, np.float64))
    dx = rows_backward(X, (dy * w).reshape(X.shape), eps, rms).reshape(x.shape)
    lead = tuple(range(x.ndim - k))
    return (y, dx, None if weight is None else np.sum(dy * xhat, axis=lead),
            None if bias is None else np.sum(dy, axis=lead))


def group_norm_ref(x: Array, dy: Array, G: int, weight: Array, bias: Array,
                   eps: float) -> Tuple[Array, Array, Array, Array, Array, Array]:
    """(y, dx, grad_weight, grad_bias, mean, var) of group norm; instance norm is G = C."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    N, C = x.shape[:2]
    w = np.ones(C) if weight is None else np.asarray(weight, np.float64)
    X = x.reshape(N * G, -1)
    xhat = rows_forward(X, eps).reshape(x.shape)
    y = xhat * bcast(w, x) + (0.0 if bias is None else bcast(bias, x))
    dx = rows_backward(X, (dy * bcast(w, x)).reshape(X.shape), eps).reshape(x.shape)
    ax = channel_axes(x)
    return (y, dx, None if weight is None else np.sum(dy * xhat, axis=ax),
            None if bias is None else np.sum(dy, axis=ax),
            X.mean(axis=1).reshape(N, G), X.var(axis=1).reshape(N, G))


class RefInstanceNorm(RefBatchNorm):
    """float64 model of torch.nn.InstanceNormNd: per-instance statistics; running statistics
    (when tracked) move toward the batch mean of the per-instance mean and unbiased variance;
    momentum=None leaves them; eval with tracking normalizes like batch norm's eval."""

    def __init__(self, C: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = False, bias: bool = True, track: bool = False) -> None:
        super().__init__(C, eps, momentum, affine, bias, track)

    def forward(self, x: Array) -> Array:
        x = np.asarray(x, dtype=np.float64)
        self.x = x
        if self.training or not self.track:
            self.instance = True
            C, S = x.shape[1], x[0, 0].size
            y, *_, mean, var = group_norm_ref(x, x, C, self.weight, self.bias, self.eps)
            if self.training and self.track:
                f = 0.0 if self.momentum is None else self.momentum
                self.running_mean = (1 - f) * self.running_mean + f * mean.mean(axis=0)
                self.running_var = ((1 - f) * self.running_var
                                    + f * (var * S / (S - 1)).mean(axis=0))
            return y
        self.instance = False
        return super().forward(x)

    def backward(self, dy: Array) -> Tuple[Array, Array, Array]:
        if self.instance:
            _, dx, gw, gb, *_ = group_norm_ref(self.x, dy, self.x.shape[1], self.weight,
                                               self.bias, self.eps)
            return dx, gw, gb
        dx, gw, gb = super().backward(dy)
        return (dx, None if self.weight is None else gw, None if self.bias is None else gb)
