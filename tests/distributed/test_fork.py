"""Forked workers (issue 20, item 1): GNU libgomp's thread pool does not survive fork(), so a
child whose parent ran an OpenMP region used to hang on its first threaded kernel. Each case
runs in a fresh interpreter under a timeout, so that a hang fails the test instead of the run."""
import os
import subprocess
import sys
import textwrap

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# The parent runs cnorm's threaded kernels (and torch's, when installed) before it forks.
PARENT = """
import multiprocessing as mp, os, sys, time
import numpy as np
import cnorm
cnorm.set_num_threads(2)
rng = np.random.default_rng(0)
imgs = rng.integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
x = rng.standard_normal((16, 32, 32, 32)).astype(np.float32)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

def work(i):
    y = cnorm.normalize_images(imgs, MEAN, STD)
    z = cnorm.batch_norm(x, None, None, training=True)
    return y.tobytes() + z.tobytes(), cnorm.get_num_threads(), cnorm.show_config(False)


if __name__ == "__main__":
    want = work(0)[0]  # threaded regions in the parent
"""


def run(tmp_path, main, timeout=90):
    """PARENT + ``main`` (indented under its __main__ guard) as a script, so that spawned
    workers can import its functions; fails, instead of hanging, past ``timeout``."""
    script = tmp_path / "parent.py"
    script.write_text(PARENT + textwrap.indent(textwrap.dedent(main), "    "))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=timeout, cwd=HERE)
    assert p.returncode == 0, f"exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


@pytest.mark.openmp
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_pool_worker_finishes_with_the_parents_bits(method, tmp_path):
    out = run(tmp_path, f"""
    t = time.perf_counter()
    with mp.get_context({method!r}).Pool(2) as pool:
        got = pool.map(work, range(2))
    assert all(g[0] == want for g in got), "a worker computed other bits"
    threads = [g[1] for g in got]
    forked = [g[2]["forked_child"] for g in got]
    print(threads, forked, round(time.perf_counter() - t, 2))
    """)
    threads, forked = out.split("]")[0], out.split("]")[1]
    if method == "fork":  # serial, and says so
        assert "[1, 1" in threads and "True, True" in forked, out
    else:  # a fresh interpreter keeps its threads
        assert "[2, 2" in threads and "False, False" in forked, out


@pytest.mark.openmp
def test_a_torch_dataloader_with_fork_workers_finishes(tmp_path):
    pytest.importorskip("torch")
    out = run(tmp_path, """
import torch
torch.ones(1 << 20).sum()  # torch's OpenMP region too

class Images(torch.utils.data.Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        return torch.from_numpy(cnorm.normalize_images(imgs[i * 4:(i + 1) * 4], MEAN, STD))

want_batches = [cnorm.normalize_images(imgs[i * 4:(i + 1) * 4], MEAN, STD) for i in range(4)]
loader = torch.utils.data.DataLoader(Images(), batch_size=None, num_workers=2,
                                     multiprocessing_context="fork")
t = time.perf_counter()
got = [b.numpy() for b in loader]
assert all(g.tobytes() == w.tobytes() for g, w in zip(got, want_batches))
print("ok", round(time.perf_counter() - t, 2))
""")
    assert out.startswith("ok"), out


def test_set_num_threads_in_a_forked_child_warns_and_stays_serial(tmp_path):
    out = run(tmp_path, """
import os, warnings
import cnorm
pid = os.fork()
if pid == 0:
    code = 1
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            cnorm.set_num_threads(4)
        code = 0 if (cnorm.get_num_threads() == 1 and w
                     and "forked" in str(w[0].message)) else 3
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), cnorm.show_config(False)["forked_child"])
""")
    assert out.split() == ["0", "False"], out
