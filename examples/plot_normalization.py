"""
What normalization does to a batch
==================================

A batch of feature maps whose channels have their own offsets and spreads, through the four
families of cnorm: batch norm (per channel, over the batch), layer norm (per sample, over
everything), group norm (per sample and group of channels) and instance norm (per sample and
channel). The histograms show each channel's values before and after; the printed table the
statistics each layer makes zero-mean and unit-variance.
"""
import matplotlib.pyplot as plt
import numpy as np

import cnorm

rng = np.random.default_rng(0)
N, C, H, W = 16, 4, 8, 8
offsets, scales = np.array([-6.0, 0.0, 3.0, 12.0]), np.array([0.5, 1.0, 3.0, 6.0])
x = (rng.standard_normal((N, C, H, W)) * scales[:, None, None]
     + offsets[:, None, None]).astype(np.float32)
x[:N // 2] += 4.0  # half of the samples shifted: what per-sample norms remove

layers = {
    "BatchNorm2d": cnorm.BatchNorm2d(C),
    "LayerNorm over (C, H, W)": cnorm.LayerNorm((C, H, W)),
    "GroupNorm(2 groups)": cnorm.GroupNorm(2, C),
    "InstanceNorm2d": cnorm.InstanceNorm2d(C),
}
outputs = {"input": x} | {name: layer(x) for name, layer in layers.items()}

# %%
# Each channel's values, before and after
# ---------------------------------------

fig, axes = plt.subplots(1, len(outputs), figsize=(15, 3), sharey=True)
for ax, (name, y) in zip(axes, outputs.items()):
    for c in range(C):
        ax.hist(y[:, c].ravel(), bins=40, histtype="step", label=f"channel {c}")
    ax.set_title(name, fontsize=9)
axes[0].legend(fontsize=7)
fig.tight_layout()

# %%
# The statistics each layer normalizes
# ------------------------------------
# Batch norm makes every channel zero-mean over the batch; the per-sample norms make every
# sample (layer norm), every (sample, group) and every (sample, channel) zero-mean and
# unit-variance, whatever the other samples hold.

print(f"{'':26} {'channel means (over N, H, W)':>34}   per-sample std (first 3)")
for name, y in outputs.items():
    means = y.mean(axis=(0, 2, 3))
    per_sample = y.reshape(N, -1).std(axis=1)[:3]
    print(f"{name:26} {np.array2string(means, precision=2, suppress_small=True):>34}   "
          f"{np.array2string(per_sample, precision=2)}")
