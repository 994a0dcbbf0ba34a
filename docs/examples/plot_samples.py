"""
Samples versus data
===================

:meth:`~skvae.GaussianVAE.sample` draws z from the prior and then x from the
decoder, noise included, and returns rows in the units of the training data.
A good density model produces draws that look like the data: here two
skewed, strictly positive features of the breast-cancer data (a tumour's mean
area in pixels and its mean concavity), compared with draws from a single
Gaussian fitted to the same 30 features (``GaussianMixture(n_components=1)``),
which is what a linear model such as factor analysis can at best produce.
"""

import warnings

import matplotlib.pyplot as plt
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from skvae import GaussianVAE

# Few epochs, so that the example runs in seconds: the fit may stop before
# the loss has settled, which is what ConvergenceWarning would say.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

data = load_breast_cancer()
X, names = data.data, list(data.feature_names)
i, j = names.index("mean area"), names.index("mean concavity")

vae = GaussianVAE(n_components=5, max_iter=150, random_state=0).fit(X)
gaussian = GaussianMixture(n_components=1, random_state=0).fit(X)
draws = {
    "data": X,
    "GaussianVAE.sample": vae.sample(len(X), random_state=1),
    "Gaussian (GaussianMixture.sample)": gaussian.sample(len(X))[0],
}

fig, axes = plt.subplots(
    2, 3, figsize=(12, 6.5), layout="constrained", height_ratios=[2, 1]
)
for column, (label, rows) in enumerate(draws.items()):
    ax = axes[0, column]
    ax.scatter(X[:, i], X[:, j], s=4, color="lightgrey", label="data")
    if label != "data":
        ax.scatter(rows[:, i], rows[:, j], s=4, color="C1", label="draws")
    ax.set_title(label)
    ax.set_xlabel(names[i])
    ax.set_ylabel(names[j])
    ax.set_xlim(-600, 2700)
    ax.set_ylim(-0.2, 0.45)
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5)
    axes[1, column].hist(X[:, i], bins=40, range=(-600, 2700), color="lightgrey")
    if label != "data":
        axes[1, column].hist(
            rows[:, i], bins=40, range=(-600, 2700), histtype="step", color="C1", lw=1.5
        )
    axes[1, column].set_xlabel(names[i])
axes[1, 0].set_ylabel("rows")
plt.show()

# %%
# Share of draws with a negative area or concavity, which the data never have:
share = {
    label: float(((rows[:, i] < 0) | (rows[:, j] < 0)).mean())
    for label, rows in draws.items()
}
for label, value in share.items():
    print(f"{label:36s} {value:.1%}")
