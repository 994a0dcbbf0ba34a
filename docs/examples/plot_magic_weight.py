r"""
The "magic weight": fixed versus learned decoder variance
=========================================================

A common recipe for real-valued data is the loss ``MSE + w * KL`` with a
hand-tuned ``w``. It is exactly a Gaussian decoder with a *fixed* variance
:math:`\sigma^2 = w D / 2` (mean squared error over D features) or
:math:`\sigma^2 = w / 2` (summed squared error); see :ref:`no_magic_weight`.
A fixed variance that is too small or too large breaks the VAE in opposite
ways, whereas the closed-form variance that :class:`~skvae.GaussianVAE` uses
by default balances reconstruction and KL by itself.

Three models are fitted to the same digit images. Variances are in the
model's internal units: with the default ``standardize="auto"`` each pixel
is standardized and, on these data, then Gaussianized (``marginal_knots_``
is set; see :ref:`units`), after which a pixel's variance inside the model
is at most about 0.84 (0.70 at the median; less for pixels that are
nearly always blank, and 0 for the three that always are):

- ``decoder_variance=1e-3``: the decoder claims pixel noise with a standard
  deviation of about 0.03 internal units, under 4% of the median pixel's
  (``w`` of about ``3e-5`` in the mean-MSE convention).
  Each nat of KL is then worth almost nothing next to the reconstruction, so
  the codes run far outside the prior: an autoencoder, whose prior draws
  decode to nonsense.
- ``decoder_variance=10.0``: the noise claimed exceeds every direction of
  variance in the data (the largest eigenvalue of the covariance of the
  pixels inside the model is about 5.4), so encoding anything costs more KL
  than it saves in reconstruction: the posterior collapses onto the prior
  and every reconstruction is the mean digit.
- ``decoder_variance="feature"`` (the default): one variance per pixel, set
  at each step to the mean squared residual.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from skvae import GaussianVAE

# Few epochs, so that the example runs in seconds: the fits stop before the
# loss has settled, which is what ConvergenceWarning would say.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train = X[:1500], X[1500:], y[:1500]

settings = {
    "tiny fixed variance (1e-3)": 1e-3,
    "large fixed variance (10)": 10.0,
    'learned ("feature")': "feature",
}
models = {
    label: GaussianVAE(
        n_components=2,
        decoder_variance=variance,
        init="random",
        max_iter=60,
        random_state=0,
    ).fit(X_train)
    for label, variance in settings.items()
}

# %%
# Each row is one setting. Left: the posterior means of the training digits
# with the prior's two-standard-deviation circle. Middle: six test digits
# (top) and their reconstructions (bottom), with the mean squared error per
# pixel over the whole test set. Right: decoder means of twelve draws from the
# prior, i.e. what the model generates.

rng = np.random.default_rng(0)
originals = X_test[:6]
prior_draws = rng.standard_normal((12, 2))


def image_grid(images, n_columns=6):
    """Tile 8x8 images into rows of ``n_columns``, with a blank margin each."""
    tiles = np.pad(images.reshape(-1, 8, 8), ((0, 0), (1, 1), (1, 1)))
    rows = tiles.reshape(-1, n_columns, 10, 10)
    return np.vstack([np.hstack(list(row)) for row in rows])


fig, axes = plt.subplots(
    3, 3, figsize=(11, 9), layout="constrained", width_ratios=[1, 1.4, 1.4]
)
for (label, vae), row in zip(models.items(), axes, strict=True):
    Z = vae.transform(X_train)
    row[0].scatter(Z[:, 0], Z[:, 1], c=y_train, cmap="tab10", s=4)
    row[0].add_patch(plt.Circle((0, 0), 2, fill=False, color="grey", ls="--"))
    row[0].set_aspect("equal", adjustable="datalim")
    row[0].set_title(
        f"{label}\nKL = {vae.kl_per_component_.sum():.1f} nats, "
        f"test log p(x) = {vae.score(X_test):.0f}",
        fontsize=10,
    )
    test_mse = np.mean((vae.inverse_transform(vae.transform(X_test)) - X_test) ** 2)
    reconstructions = vae.inverse_transform(vae.transform(originals))
    row[1].imshow(
        image_grid(np.vstack([originals, reconstructions])),
        cmap="gray_r",
        vmin=0,
        vmax=16,
    )
    row[1].set_title(
        f"test digits and reconstructions\nMSE = {test_mse:.1f}", fontsize=10
    )
    generated = vae.inverse_transform(prior_draws)
    row[2].imshow(image_grid(generated), cmap="gray_r", vmin=0, vmax=16)
    row[2].set_title("decoded draws from the prior", fontsize=10)
    for ax in row[1:]:
        ax.set_axis_off()
plt.show()

# %%
# The tiny variance spreads the codes over a region tens of times wider than
# the prior, which covers only a small patch of it: its KL term is large,
# draws from the prior all decode to much the same blur, and its held-out
# log-likelihood is far below the others because the noise it claims is far
# below its real reconstruction error. The large variance ignores its input
# (KL = 0): every reconstruction and every draw is the mean digit. The learned
# variance keeps the codes on the prior's scale, reconstructs the digits'
# shapes and generates varied digits.
for label, vae in models.items():
    print(f"{label:28s} KL per dimension: {vae.kl_per_component_.round(2)}")
