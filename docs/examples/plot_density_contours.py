"""
Density contours: GaussianVAE versus GaussianMixture
=====================================================

:meth:`~skvae.GaussianVAE.score_samples` returns log p(x) in the units of the
data, the same quantity as :meth:`sklearn.mixture.GaussianMixture.score_samples`.
Here both model two interleaved half-moons whose coordinates are in very
different units: the first is in the tens of thousands, the second in
thousandths. :class:`~skvae.GaussianVAE` standardizes internally and adds the
log-Jacobian of that map, so its densities are in the data's units too and the
held-out log-likelihoods can be compared directly.

The data lie near a curve and the decoder bends the latent space along it.
Such thin structure is hard to find when the KL term weighs fully from the
first epoch (codes are pulled onto the prior before they carry anything), so
the KL weight is ramped up over the first 30 epochs with ``kl_warmup``, and
the stopping rule is given more patience than the default
(``n_iter_no_change=50``) because the loss of a small data set is noisy.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_moons
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from skvae import GaussianVAE

# Few epochs, so that the example runs in seconds: the fit may stop before
# the loss has settled, which is what ConvergenceWarning would say.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

moons, _ = make_moons(n_samples=2000, noise=0.06, random_state=0)
units = np.array([20_000.0, 0.004])  # e.g. metres and kilograms
X = moons * units + np.array([50_000.0, 0.01])
X_train, X_test = X[:1500], X[1500:]

models = {
    "GaussianVAE(n_components=2)": GaussianVAE(
        n_components=2,
        init="random",
        kl_warmup=30,
        learning_rate_init=3e-3,
        max_iter=150,
        n_iter_no_change=50,
        random_state=0,
    ),
    "GaussianMixture(n_components=4)": GaussianMixture(n_components=4, random_state=0),
    "GaussianMixture(n_components=1)": GaussianMixture(n_components=1, random_state=0),
}
for model in models.values():
    model.fit(X_train)

# %%
# Log-density contours on a grid, with the training data on top. The titles
# give the mean held-out log-likelihood per row (higher is better); in these
# units a log-density around ``-log(20000 * 0.004) = -4.4`` corresponds to a
# density of one per unit square of the moons' own scale.

x0, x1 = np.meshgrid(
    np.linspace(X[:, 0].min() - 10_000, X[:, 0].max() + 10_000, 120),
    np.linspace(X[:, 1].min() - 0.002, X[:, 1].max() + 0.002, 120),
)
grid = np.column_stack([x0.ravel(), x1.ravel()])

fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), layout="constrained", sharey=True)
levels = np.linspace(-16, -2, 15)
for ax, (label, model) in zip(axes, models.items(), strict=True):
    log_density = model.score_samples(grid).reshape(x0.shape)
    filled = ax.contourf(
        x0, x1, np.clip(log_density, levels[0], None), levels=levels, cmap="viridis"
    )
    ax.scatter(X_train[:, 0], X_train[:, 1], s=1, color="white", alpha=0.5)
    ax.set_title(f"{label}\nheld-out log-likelihood {model.score(X_test):.2f}")
    ax.set_xlabel("feature 0 (metres)")
axes[0].set_ylabel("feature 1 (kilograms)")
fig.colorbar(filled, ax=axes, label="log p(x)")
plt.show()
