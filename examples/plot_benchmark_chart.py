"""
The benchmark chart
===================

cnorm's speedup over torch per case, from one run of ``python -m cnorm.bench`` on the
development machine (AMD EPYC, Zen 5, 2 cores; the figures are stored in
``docs/bench_amd_epyc_issue20.json``). Each library ran in processes of its own, and the
stream-copy bandwidth of the same run is in the title: compare ratios measured side by side,
as these machines are shared. Run ``python -m cnorm.bench`` for your own machine's chart.
"""
import json
import os

import matplotlib.pyplot as plt

from cnorm.bench.report import chart

here = os.path.dirname(os.path.abspath(globals().get("__file__", "plot_benchmark_chart.py")))
for folder in (os.path.join(here, "..", "docs"), os.path.join(here, "..")):
    path = os.path.join(folder, "bench_amd_epyc_issue20.json")
    if os.path.exists(path):
        break
with open(path) as f:
    result = json.load(f)

fig = chart(result)

# %%
# The same run as numbers: the fraction of the copy bandwidth each training forward reaches
rows = [r for r in result["rows"] if r["op"] == "train_fwd" and r["threads"] == 1]
for r in rows:
    print(f"{r['case']:10} {'x'.join(map(str, r['shape'])):>16}  "
          f"{r['torch'] / r['cnorm']:4.1f}x torch  {100 * r['copy_fraction']:3.0f}% of copy")
plt.show()
