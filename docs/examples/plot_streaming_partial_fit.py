"""
Fitting on data larger than memory with ``partial_fit``
=======================================================

:meth:`~skvae.GaussianVAE.partial_fit` runs one epoch over the rows it is
given, so a data set that does not fit in memory can be streamed through the
model a chunk at a time. Here the data live in a memory-mapped ``.npy`` file
many times larger than a chunk; each chunk is copied out of the file, used for
one epoch and dropped. The peak memory of the process stays flat while the
amount of data seen grows, and the loss falls chunk after chunk.

The standardization statistics (``mean_``, ``scale_``) are fixed by the first
chunk, so the first chunk should be representative of the rest (shuffle the
file's rows if it is sorted).
"""

# %%
# A memory-mapped data set
# ------------------------
# 300,000 rows of 40 features near a curved two-dimensional surface, written
# chunk by chunk into a ``.npy`` file without ever being held in memory whole.
import resource
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from skvae import GaussianVAE

n_samples, n_features, chunk_rows = 300_000, 40, 20_000
rng = np.random.default_rng(0)
mixing = rng.normal(size=(3, n_features)).astype(np.float32)
path = Path(tempfile.mkdtemp()) / "data.npy"
X = np.lib.format.open_memmap(
    path, mode="w+", dtype=np.float32, shape=(n_samples, n_features)
)
for start in range(0, n_samples, chunk_rows):
    z = rng.normal(size=(chunk_rows, 2)).astype(np.float32)
    curve = np.column_stack([z, np.sin(2 * z[:, :1])])
    noise = rng.normal(scale=0.1, size=(chunk_rows, n_features))
    X[start : start + chunk_rows] = 5.0 * curve @ mixing + 20.0 + noise
X.flush()
del X
print(
    f"{path.stat().st_size / 1e6:.0f} MB on disk, {chunk_rows * n_features * 4 / 1e6:.1f} MB a chunk"
)

# %%
# Streaming it through ``partial_fit``
# ------------------------------------
# Each chunk is read from a fresh memory map that is dropped after the copy,
# so pages of the file already used do not stay mapped into the process.


def chunks(path, chunk_rows):
    n_rows = np.load(path, mmap_mode="r").shape[0]
    for start in range(0, n_rows, chunk_rows):
        data = np.load(path, mmap_mode="r")
        chunk = np.array(data[start : start + chunk_rows])
        del data
        yield chunk


def peak_rss_mb():
    # ru_maxrss is in kilobytes on Linux, in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e6


vae = GaussianVAE(n_components=2, random_state=0)
seen, peaks, losses = [], [], []
for i, chunk in enumerate(chunks(path, chunk_rows)):
    vae.partial_fit(chunk)
    if i == 0:
        baseline = peak_rss_mb()  # after the first chunk: torch is warmed up
    seen.append((i + 1) * chunk.nbytes / 1e6)
    peaks.append(peak_rss_mb() - baseline)
    losses.append(vae.loss_curve_[-1])
path.unlink()

# %%
# Memory stays flat while the data seen grows
# -------------------------------------------
fig, (ax_memory, ax_loss) = plt.subplots(1, 2, figsize=(9, 3.5))
chunk_index = np.arange(1, len(seen) + 1)
ax_memory.plot(chunk_index, seen, label="data seen so far")
ax_memory.plot(chunk_index, peaks, label="growth of peak memory")
ax_memory.set(xlabel="chunk", ylabel="MB", title="Memory")
ax_memory.legend()
ax_loss.plot(chunk_index, losses, marker="o")
ax_loss.set(xlabel="chunk", ylabel="negative ELBO per row", title="Training loss")
fig.tight_layout()
plt.show()
