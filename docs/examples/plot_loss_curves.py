"""
Loss curves and the KL of each latent dimension
===============================================

With ``early_stopping=True``, :class:`~skvae.GaussianVAE` holds out
``validation_fraction`` of the rows and records their ELBO after each epoch in
``validation_scores_``, next to the training objective in ``loss_curve_``
(the negative ELBO). Both are per row, in nats, in the units of the data, so
the two curves can be drawn on one axis after a change of sign.

The breast-cancer data are used in their raw units: 30 features whose standard
deviations run from about 0.003 to 570.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning

from skvae import GaussianVAE

# Few epochs, so that the example runs in seconds: the fits may stop before
# the loss has settled, which is what ConvergenceWarning would say.
warnings.filterwarnings("ignore", category=ConvergenceWarning)

X, _ = load_breast_cancer(return_X_y=True)

vae = GaussianVAE(
    n_components=5,
    init="random",  # the network's training from scratch, shown below
    early_stopping=True,
    validation_fraction=0.2,
    n_iter_no_change=10,
    max_iter=150,
    random_state=0,
).fit(X)

# %%
# The ELBO terms over training
# ----------------------------
# ``kl_per_component_`` is the mean KL term of each latent dimension over the
# training rows. Training one epoch at a time with
# :meth:`~skvae.GaussianVAE.partial_fit` updates it after every epoch, which
# shows how the KL term, and so the information carried by each latent
# dimension, builds up. (``partial_fit`` holds no validation set out.)

stepwise = GaussianVAE(n_components=5, init="random", random_state=0)
kl_history = []
for _ in range(vae.n_iter_):
    stepwise.partial_fit(X)
    kl_history.append(stepwise.kl_per_component_)
kl_history = np.array(kl_history)
loss = np.array(stepwise.loss_curve_)

# %%
# Left: the training and validation negative ELBO of the early-stopped fit;
# the vertical line marks its best validation epoch, whose weights it keeps.
# With 455 training rows the gap between the curves is over-fitting: the
# training loss keeps falling while the validation ELBO levels off.
# Right: the negative ELBO of the epoch-by-epoch fit split into its KL term
# (stacked by latent dimension) and the reconstruction term
# :math:`-\mathbb E_q[\log p(x \mid z)]`, on two axes because the
# reconstruction term is in the data's units and the KL term in latent
# nats. (The loss is averaged during each epoch and the KL measured at its
# end, so their difference is the reconstruction term only approximately.)

epochs = np.arange(1, vae.n_iter_ + 1)
fig, (ax_loss, ax_kl) = plt.subplots(1, 2, figsize=(11, 4.3), layout="constrained")
ax_loss.plot(epochs, vae.loss_curve_, label="training (loss_curve_)")
ax_loss.plot(
    epochs, -np.array(vae.validation_scores_), label="validation (-validation_scores_)"
)
best = int(np.argmax(vae.validation_scores_)) + 1
ax_loss.axvline(best, color="grey", ls=":", label=f"best validation epoch ({best})")
ax_loss.set_xlabel("epoch")
ax_loss.set_ylabel("negative ELBO per row (nats)")
ax_loss.legend()
ax_loss.set_title("Early stopping on the validation ELBO")

ax_kl.stackplot(
    epochs,
    kl_history.T,
    labels=[f"KL, latent dimension {j}" for j in range(kl_history.shape[1])],
    alpha=0.8,
)
ax_kl.set_xlabel("epoch")
ax_kl.set_ylabel("KL term per row (nats)")
ax_rec = ax_kl.twinx()
ax_rec.plot(epochs, loss - kl_history.sum(1), color="black", label="reconstruction")
ax_rec.set_ylabel("reconstruction term per row (nats)")
handles = ax_kl.get_legend_handles_labels()[0] + ax_rec.get_legend_handles_labels()[0]
ax_kl.legend(
    handles=handles,
    loc="upper center",
    bbox_to_anchor=(0.5, -0.15),
    ncols=3,
    fontsize=8,
)
ax_kl.set_title("The two ELBO terms, epoch by epoch")
plt.show()

# %%
# A latent dimension whose KL stays near zero carries no information about x:
# it has collapsed onto the prior. Here the final values are
print("KL per latent dimension (nats):", stepwise.kl_per_component_.round(2))
