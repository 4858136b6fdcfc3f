"""A whole training step of an efficientnet-style network (depthwise convolutions, batch norm +
SiLU, squeeze-excite, residuals), plain torch against ``cnorm.torch.convert`` of the same
network, timed in alternating blocks in one process: this file's own network (torch.nn
layers), and timm's efficientnet_b0 when timm imports (cnorm.testing.timm).

    python bench/torch_model.py [--quick] [--threads 1] [--size 128] [--batch 16]
"""
import argparse
import copy
import time

import numpy as np
import torch
from torch import nn

import cnorm.torch as ct
from cnorm.bench._stream import stream_copy
from cnorm.bench.report import cpu_name
from cnorm.testing.timm import import_timm

# (expansion, output channels, blocks, stride) per stage, as efficientnet_b0's
STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 40, 2, 2), (6, 80, 3, 2), (6, 112, 3, 1),
          (6, 192, 4, 2), (6, 320, 1, 1)]


def conv_bn(cin, cout, k=1, stride=1, groups=1, act=True):
    """Conv2d, BatchNorm2d and (``act``) SiLU, as torch code writes them."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.SiLU()] if act else []))


class SqueezeExcite(nn.Module):
    def __init__(self, channels, squeezed):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(nn.functional.silu(self.reduce(s))))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expansion, 3x3 depthwise, squeeze-excite, 1x1 projection."""

    def __init__(self, cin, cout, expand, stride):
        super().__init__()
        hidden = cin * expand
        self.expand = conv_bn(cin, hidden) if expand > 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.se = SqueezeExcite(hidden, max(1, cin // 4))
        self.project = conv_bn(hidden, cout, act=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.project(self.se(self.depthwise(self.expand(x))))
        return x + y if self.skip else y


def network(classes=10):
    torch.manual_seed(0)
    layers, cin = [conv_bn(3, 32, 3, 2)], 32
    for expand, cout, blocks, stride in STAGES:
        for i in range(blocks):
            layers.append(MBConv(cin, cout, expand, stride if i == 0 else 1))
            cin = cout
    layers += [conv_bn(cin, 1280), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(1280, classes)]
    return nn.Sequential(*layers)


def step(model, x, target):
    def run():
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), target).backward()
    return run


def block(fn, reps):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def compare(name, model, x, target, rounds, reps):
    """(name, torch ms, converted ms, speedup): alternating blocks, medians of the blocks."""
    model.train()
    twin = ct.convert(copy.deepcopy(model))
    plain_t, twin_t = [], []
    for _ in range(rounds):
        plain_t.append(block(step(model, x, target), reps))
        twin_t.append(block(step(twin, x, target), reps))
    a, b = float(np.median(plain_t)), float(np.median(twin_t))
    return name, a * 1e3, b * 1e3, a / b


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small input, one round (a smoke run)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=128, help="image side")
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args()
    size, rounds, reps = (32, 1, 1) if args.quick else (args.size, 5, 3)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, size, size)
    target = torch.randint(0, 10, (args.batch,))
    src = np.ones(32 << 20, np.float32)
    copy_s = block(lambda: stream_copy(src, np.empty_like(src), args.threads), 5)
    print(f"{cpu_name()}, {args.threads} thread(s), stream "
          f"copy {2 * src.nbytes / copy_s / 1e9:.1f} GB/s; batch {args.batch}, {size}x{size}")
    models = [("efficientnet-style (torch.nn, BatchNorm2d + SiLU)", network())]
    timm = import_timm()
    if timm is not None:
        models.append(("timm efficientnet_b0 (BatchNormAct2d)",
                       timm.create_model("efficientnet_b0", num_classes=10)))
    print("model | torch ms | converted ms | speedup")
    print("---|---|---|---")
    for name, model in models:
        row = compare(name, model, x, target, rounds, reps)
        print(f"{row[0]} | {row[1]:.1f} | {row[2]:.1f} | {row[3]:.2f}x")


if __name__ == "__main__":
    main()
