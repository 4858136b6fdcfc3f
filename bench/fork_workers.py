"""What a forked worker costs with cnorm (issue 20, item 1): a process forked from one that ran
OpenMP runs cnorm's kernels on one thread. Times one data-loading batch (normalize_images of 16
uint8 224x224 images, and a BatchNorm2d training step) in the parent on 1 and 2 threads, in a
fork worker (serial), in a spawn worker (threads of its own), and a torch DataLoader epoch with
0 and 2 fork workers. ``python bench/fork_workers.py [--reps N]``; medians in ms."""
import argparse
import multiprocessing as mp
import statistics
import time

import numpy as np

import cnorm

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMGS = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
X = np.random.default_rng(1).standard_normal((16, 64, 56, 56)).astype(np.float32)


def timed(reps):
    """(median ms of normalize_images, of a BatchNorm2d forward + backward, threads used)."""
    layer = cnorm.BatchNorm2d(64)
    out = []
    for fn in (lambda: cnorm.normalize_images(IMGS, MEAN, STD),
               lambda: layer.backward(layer(X))):
        fn()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        out.append(1e3 * statistics.median(ts))
    return (*out, cnorm.get_num_threads())


def dataloader_epoch(workers):
    import torch

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 32

        def __getitem__(self, i):
            return torch.from_numpy(cnorm.normalize_images(IMGS[i % 16], MEAN, STD))

    loader = torch.utils.data.DataLoader(Images(), batch_size=8, num_workers=workers,
                                         multiprocessing_context="fork" if workers else None)
    t = time.perf_counter()
    for _ in loader:
        pass
    return 1e3 * (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=20)
    reps = ap.parse_args().reps
    rows = []
    for n in (1, 2):
        cnorm.set_num_threads(n)
        rows.append((f"parent, {n} thread(s)", *timed(reps)))
    cnorm.set_num_threads(2)  # the parent has run threaded regions before it forks
    for method in ("fork", "spawn"):
        with mp.get_context(method).Pool(1) as pool:
            rows.append((f"{method} worker", *pool.apply(timed, (reps,))))
    print(f"{cnorm.show_config(False)['simd_target']} build; medians of {reps} calls, ms")
    print("where | normalize_images 16x224x224x3 | bn2d fwd+bwd 16x64x56x56 | threads")
    print("--- | --- | --- | ---")
    for name, a, b, n in rows:
        print(f"{name} | {a:.2f} | {b:.2f} | {n}")
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    for w in (0, 2):
        dataloader_epoch(w)  # warm
        print(f"DataLoader, {w} fork workers: epoch of 32 images in "
              f"{statistics.median(dataloader_epoch(w) for _ in range(3)):.1f} ms")


if __name__ == "__main__":
    main()
