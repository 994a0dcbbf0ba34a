"""
=====================================================
Detecting malignant tumours as outliers with a VAE
=====================================================

:class:`skvae.VAEOutlierDetector` ranks rows by their log-likelihood under a
Gaussian variational autoencoder fitted without labels. Here the inliers are
the benign tumours of scikit-learn's breast-cancer data set, in their raw
units (areas in the hundreds next to fractal dimensions below 0.1), and 20
malignant tumours are mixed in as outliers. The labels are used only to
evaluate the scores. At its defaults the detector is a linear VAE with one
latent dimension per feature, which is a Gaussian: it is fitted in closed
form, with its correlations shrunk (``shrinkage=0.2``), and refitted on the
rows it finds most likely (``support_fraction=0.75``), so that the malignant
rows it was fitted on do not shape its density; see
:doc:`/guide/outlier_detection`.

The left panel shows the log-likelihoods of inliers and outliers with the
default threshold (``contamination="auto"``: a fence four interquartile
ranges below the lower quartile of the training scores); the right panel compares ROC curves with
:class:`~sklearn.ensemble.IsolationForest` and a single Gaussian
(:class:`~sklearn.mixture.GaussianMixture`).
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import IsolationForest
from sklearn.metrics import RocCurveDisplay
from sklearn.mixture import GaussianMixture

from skvae import VAEOutlierDetector

X_all, y_all = load_breast_cancer(return_X_y=True)
rng = np.random.default_rng(0)
benign = np.flatnonzero(y_all == 1)
malignant = rng.choice(np.flatnonzero(y_all == 0), size=20, replace=False)
rows = np.concatenate([benign, malignant])
X = X_all[rows]
is_outlier = np.isin(rows, malignant)

# %%
# Fit on all rows, without labels, and score the same rows, with default
# parameters.
detector = VAEOutlierDetector(random_state=0).fit(X)
scores = detector.score_samples(X)  # log-likelihood: higher is more normal
labels = detector.predict(X)  # -1 below detector.offset_, +1 above
print(
    f"flagged {np.sum(labels == -1)} rows, {np.sum(labels[is_outlier] == -1)} "
    f"of them among the {is_outlier.sum()} malignant ones"
)

baselines = {
    "IsolationForest": IsolationForest(random_state=0).fit(X).score_samples(X),
    "GaussianMixture(1)": GaussianMixture(random_state=0).fit(X).score_samples(X),
}

# %%
# Score distributions and ROC curves (outliers are the positive class, so the
# curves rank by ``-score_samples``).
fig, (ax_hist, ax_roc) = plt.subplots(1, 2, figsize=(10, 4))
bins = np.linspace(np.percentile(scores, 0.5), scores.max(), 40)
ax_hist.hist(scores[~is_outlier], bins=bins, alpha=0.6, label="benign (inliers)")
ax_hist.hist(scores[is_outlier], bins=bins, alpha=0.6, label="malignant (outliers)")
ax_hist.axvline(detector.offset_, color="k", linestyle="--", label="offset_ (auto)")
ax_hist.set_xlabel("log-likelihood (score_samples)")
ax_hist.set_ylabel("rows")
ax_hist.legend()

RocCurveDisplay.from_predictions(
    is_outlier, -scores, name="VAEOutlierDetector", ax=ax_roc
)
for name, baseline_scores in baselines.items():
    RocCurveDisplay.from_predictions(is_outlier, -baseline_scores, name=name, ax=ax_roc)
ax_roc.set_title("malignant rows as outliers")
fig.tight_layout()
plt.show()
