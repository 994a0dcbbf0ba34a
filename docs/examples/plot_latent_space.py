"""
Latent space of the handwritten digits
======================================

:class:`~skvae.GaussianVAE` maps each row to the mean of its posterior
q(z|x) with :meth:`~skvae.GaussianVAE.transform`. Here the 8x8 digit images
(64 pixel intensities from 0 to 16) go into a two-dimensional latent space,
next to the two leading principal components. The labels are not used for
fitting; they only colour the points.

The VAE's decoder is non-linear, so it can spread classes that a linear
projection piles on top of each other. The prior N(0, I) keeps the codes near
the origin: the grey circle marks two prior standard deviations.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning

from skvae import GaussianVAE

# Few epochs, so that the example runs in seconds: the fit stops before the
# loss has settled, which is what ConvergenceWarning would say.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

X, y = load_digits(return_X_y=True)

vae = GaussianVAE(n_components=2, init="random", max_iter=60, random_state=0).fit(X)
Z_vae = vae.transform(X)
Z_pca = PCA(n_components=2).fit_transform(X)

fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
panels = [
    (axes[0], Z_pca, "PCA: two leading components"),
    (axes[1], Z_vae, "GaussianVAE: posterior means"),
]
for ax, Z, title in panels:
    points = ax.scatter(Z[:, 0], Z[:, 1], c=y, cmap="tab10", s=6, alpha=0.8)
    ax.set_title(title)
    ax.set_xlabel("component 1")
    ax.set_ylabel("component 2")
axes[1].add_patch(plt.Circle((0, 0), 2, fill=False, color="grey", ls="--"))
axes[1].set_aspect("equal")
fig.colorbar(points, ax=axes, ticks=np.arange(10), label="digit", shrink=0.85)
plt.show()

# %%
# The KL term of each latent dimension says how much information it carries
# about x (in nats); both dimensions are in use here.
print("KL per latent dimension (nats):", vae.kl_per_component_.round(2))
