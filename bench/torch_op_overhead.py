"""The cost of a call into a Python kernel through torch's dispatcher, by registration: one op
whose kernel returns its input's first element as a new tensor, registered with
``torch.library.custom_op`` and with the lower-level ``torch.library.Library`` (``define`` and
``impl`` for the CPU key), each called with and without autograd registered, beside the plain
Python call and a plain ``torch.autograd.Function``; and cnorm.torch's batch norm on (8, 16),
eager (a plain autograd.Function) against the registered op. Medians of many calls.

    python bench/torch_op_overhead.py

Why cnorm.torch's eager path does not go through the dispatcher, and why its registered ops
(what torch.compile traces) use ``custom_op``: see the printed table.
"""
import torch

import cnorm.torch as ct
from cnorm.bench.cases import block_median
from cnorm.bench.report import cpu_name
from cnorm.torch._ops import OPS


def kernel(x: torch.Tensor) -> torch.Tensor:
    return x[:1].clone()


def median_us(fn):
    """µs per call: the median of a block of up to 20000 calls (cnorm.bench's timing)."""
    return block_median(fn, 1.0, max_rounds=20000)[0] * 1e6


class Plain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return kernel(x)

    @staticmethod
    def backward(ctx, g):
        return torch.zeros(8).index_add_(0, torch.tensor([0]), g)


def register():
    """The op registered both ways; returns (custom_op's, Library's) callables."""
    custom = torch.library.custom_op("cnorm_bench::by_custom_op", kernel, mutates_args=())
    custom.register_fake(lambda x: x.new_empty(1))
    torch.library.register_autograd(
        "cnorm_bench::by_custom_op", lambda ctx, g: Plain.backward(ctx, g),
        setup_context=lambda ctx, inputs, output: None)
    lib = torch.library.Library("cnorm_bench", "FRAGMENT")
    lib.define("by_library(Tensor x) -> Tensor")
    lib.impl("by_library", kernel, "CPU")
    return torch.ops.cnorm_bench.by_custom_op, torch.ops.cnorm_bench.by_library, lib


def main():
    torch.set_num_threads(1)
    by_custom_op, by_library, _lib = register()
    x = torch.randn(8)
    xg = torch.randn(8, requires_grad=True)
    rows = [("Python call of the kernel", median_us(lambda: kernel(x))),
            ("torch.autograd.Function.apply (grad)", median_us(lambda: Plain.apply(xg))),
            ("torch.library.custom_op (no grad)", median_us(lambda: by_custom_op(x))),
            ("torch.library.custom_op, autograd registered (grad)",
             median_us(lambda: by_custom_op(xg))),
            ("torch.library.Library define + impl CPU (no grad)",
             median_us(lambda: by_library(x)))]
    bx = torch.randn(8, 16, requires_grad=True)
    w, b = torch.ones(16, requires_grad=True), torch.zeros(16, requires_grad=True)
    rows += [("cnorm.torch batch_norm (8,16), eager path (grad)",
              median_us(lambda: ct.functional.batch_norm(bx, None, None, w, b, True))),
             ("torch.ops.cnorm.batch_norm (8,16), registered op (grad)",
              median_us(lambda: OPS["batch_norm"](bx, w, b, None, None, None, True, 1e-5,
                                                  None, 0.0))),
             ("torch.nn.functional.batch_norm (8,16) (grad)",
              median_us(lambda: torch.nn.functional.batch_norm(bx, None, None, w, b, True)))]
    print(f"{cpu_name()}; torch {torch.__version__}; 1 thread; median of up to 20000 calls")
    print("call | µs")
    print("---|---")
    for name, us in rows:
        print(f"{name} | {us:.1f}")


if __name__ == "__main__":
    main()
