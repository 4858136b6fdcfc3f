"""Accuracy of cnorm and torch (when installed) against a float64 reference, float32 data.

    python bench/accuracy.py

For each offset: max |y - y_ref| of the training forward and the relative error of
running_var (momentum=None after one batch, so it is the unbiased batch variance).
"""
import numpy as np

import cnorm

try:
    import torch
except ImportError:
    torch = None


def errors(y, running_var, x):
    xd = x.astype(np.float64)
    ax = (0,) + tuple(range(2, x.ndim))
    mean, var = xd.mean(axis=ax, keepdims=True), xd.var(axis=ax, keepdims=True)
    y_ref = (xd - mean) / np.sqrt(var + 1e-5)
    uvar = xd.var(axis=ax, ddof=1)
    return np.max(np.abs(y - y_ref)), np.max(np.abs(running_var - uvar) / uvar)


def main():
    rng = np.random.default_rng(0)
    print(f"{'shape':>18} {'offset':>7} | {'cnorm y err':>13} {'cnorm rv rel':>12}"
          + (f" | {'torch y err':>13} {'torch rv rel':>12}" if torch else ""))
    for shape in [(32, 64, 28, 28), (4096, 64)]:
        for offset in [0.0, 1e4, 1e6]:
            x = (offset + rng.standard_normal(shape)).astype(np.float32)
            layer = (cnorm.BatchNorm2d if x.ndim == 4 else cnorm.BatchNorm1d)(
                shape[1], momentum=None)
            row = errors(layer(x), layer.running_var, x)
            line = f"{str(shape):>18} {offset:>7.0e} | {row[0]:>13.2e} {row[1]:>12.2e}"
            if torch:
                tl = (torch.nn.BatchNorm2d if x.ndim == 4 else torch.nn.BatchNorm1d)(
                    shape[1], momentum=None)
                with torch.no_grad():
                    ty = tl(torch.from_numpy(x)).numpy()
                trow = errors(ty, tl.running_var.numpy(), x)
                line += f" | {trow[0]:>13.2e} {trow[1]:>12.2e}"
            print(line)


if __name__ == "__main__":
    main()
