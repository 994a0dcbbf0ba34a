"""A MinCovDet-style reweighting step after VAEOutlierDetector's support steps.

A study, not a default (docs/guide/outlier_detection.rst, "Support steps").
:class:`~sklearn.covariance.MinCovDet` follows its C-steps with a
reweighting step: the raw covariance is scaled so that the median squared
Mahalanobis distance is that of a chi-square with as many degrees of freedom
as features (consistency), and the estimate is refitted on every row whose
scaled distance is below the chi-square's ``q`` quantile, so that it is
fitted to all the rows that look clean rather than to a fixed share. This
script adds that step to the default detector, written with the public API:
fit the default, compute each row's squared distance under its Gaussian
(from its log-likelihood and its mode's, as ``anomaly_threshold.py`` does),
keep the rows under the cut, fit ``support_fraction=1.0`` to them and rank
all rows by that fit's ``score_samples``. The fits are deterministic, so
one seed. It prints the mean ROC AUC and average precision over the data
sets in ``../shared/data/anomaly`` of the default and of each ``q``, the
share of rows kept, and the data sets that move by more than 0.01.

    OMP_NUM_THREADS=1 python benchmarks/anomaly_reweight.py [--write-docs]
"""

import warnings

import _common as harness
import numpy as np
from anomaly_threshold import fit_scores
from scipy.stats import chi2
from sklearn.metrics import average_precision_score, roc_auc_score

from skvae import VAEOutlierDetector

QUANTILES = (0.975, 0.99, 0.999)
DEFAULT = "default"
MOVE = 0.01


def run(name):
    """{setting: (ROC AUC, AP, share of rows kept)} on data set ``name``."""
    X, y = harness.load(name)
    default, mode = fit_scores(X)
    scores = {DEFAULT: (default, VAEOutlierDetector().support_fraction)}
    # The default is a Gaussian: log p(x) = log p(mode) - d2 / 2.
    distances = 2.0 * (mode - default)
    n_features = X.shape[1]
    consistency = np.median(distances) / chi2.ppf(0.5, n_features)
    for q in QUANTILES:
        kept = distances / consistency <= chi2.ppf(q, n_features)
        refit = VAEOutlierDetector(support_fraction=1.0, random_state=0, device="cpu")
        scores[f"reweighted, q = {q}"] = (
            refit.fit(X[kept]).score_samples(X),
            float(kept.mean()),
        )
    return {
        setting: (roc_auc_score(y, -s), average_precision_score(y, -s), share)
        for setting, (s, share) in scores.items()
    }


def main(argv=None):
    parser = harness.argument_parser(__doc__, docs_section="anomaly_reweight")
    args = parser.parse_args(argv)
    names = harness.data_names()
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the internetads support-rows warning
        for name in names:
            results[name] = run(name)
            harness.log(f"{name}: done")
    settings = list(results[names[0]])
    rows = []
    for setting in settings:
        values = np.array([results[name][setting] for name in names])
        moved = [
            f"{name} {results[name][setting][0] - results[name][DEFAULT][0]:+.3f}"
            for name in names
            if abs(results[name][setting][0] - results[name][DEFAULT][0]) > MOVE
        ]
        rows.append(
            [
                setting,
                f"{values[:, 0].mean():.4f}",
                f"{values[:, 1].mean():.4f}",
                f"{values[:, 2].mean():.2f}",
                ", ".join(moved) or "–",
            ]
        )
    lines = [
        harness.command(argv),
        "",
        *harness.header(),
        f"Means over the {len(names)} data sets (one seed; the fits are "
        "deterministic); rows kept: mean share of the rows the final fit is "
        f"fitted to; moved: ROC AUC changes of more than {MOVE} from the default.",
        "",
        *harness.table(
            ["setting", "ROC AUC", "AP", "rows kept", "moved (ROC AUC)"],
            rows,
            align="lrrrl",
        ),
    ]
    harness.publish(lines, "anomaly_reweight", args.write_docs)


if __name__ == "__main__":
    main()
