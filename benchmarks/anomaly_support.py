"""What VAEOutlierDetector's support steps and model size do to detection.

Fits VAEOutlierDetector on all rows of each data set in
``../shared/data/anomaly`` (unsupervised: the anomalies stay in the training
data), ranks all rows by ``score_samples`` and prints mean ROC AUC and average
precision over the data sets, per setting:

- the support fraction and the number of support steps, with the earlier
  model (``hidden_layer_sizes=(16,)``, ``n_components=2``); "1.0 + 3 fits on
  all rows" is a control that trains as long as three support steps without
  setting rows aside;
- the network and latent size, with the default support steps.

The support steps are written with the public API, as the detector's own
C-step does them: fit with ``support_fraction=1.0`` on all rows, then, per
step, rank all rows by ``score_samples``, keep the most likely fraction and
refit on them with ``warm_start=True`` (which keeps ``mean_`` and ``scale_``
and continues training).

The user guide's tables (docs/guide/outlier_detection.rst) come from this
script. One torch thread per run. Each run is appended to a JSON-lines file as
it ends; rerunning with the same file skips the runs already there.

    OMP_NUM_THREADS=1 python benchmarks/anomaly_support.py [--seeds 2] [--n-jobs 1]
        [--runs anomaly_support.jsonl] [--data NAME ...]
"""

import math
import warnings

import _common as harness
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from skvae import VAEOutlierDetector

EARLIER = {"hidden_layer_sizes": (16,), "n_components": 2}
# name -> (parameters, support fraction, number of support steps)
SETTINGS = {
    "(16,), 2: one fit (1.0)": (EARLIER, 1.0, 0),
    "(16,), 2: 1.0 + 3 fits on all rows": (EARLIER, 1.0, 3),
    "(16,), 2: 0.85, 3 steps": (EARLIER, 0.85, 3),
    "(16,), 2: 0.75, 1 step": (EARLIER, 0.75, 1),
    "(16,), 2: 0.75, 2 steps": (EARLIER, 0.75, 2),
    "(16,), 2: 0.75, 3 steps": (EARLIER, 0.75, 3),
    "(16,), 2: 0.65, 3 steps": (EARLIER, 0.65, 3),
    "(), None: 0.75, 3 steps (default)": ({}, 0.75, 3),
    "(), None: one fit (1.0)": ({}, 1.0, 0),
    "(), 8: 0.75, 3 steps": ({"n_components": 8}, 0.75, 3),
    "(16,), None: 0.75, 3 steps": ({"hidden_layer_sizes": (16,)}, 0.75, 3),
    "(32,), 8: 0.75, 3 steps": (
        {"hidden_layer_sizes": (32,), "n_components": 8},
        0.75,
        3,
    ),
}


def most_likely(scores, fraction):
    """Mask of the ``fraction`` of rows with the highest scores (ties: first rows)."""
    n_support = max(1, math.ceil(fraction * scores.shape[0]))
    support = np.zeros(scores.shape[0], dtype=bool)
    support[np.argsort(-scores, kind="stable")[:n_support]] = True
    return support


def support_steps(detector, X, fraction, steps):
    """``steps`` C-steps: refit on the most likely ``fraction`` of the rows of X."""
    detector.set_params(warm_start=True)
    for _ in range(steps):
        detector.fit(X[most_likely(detector.score_samples(X), fraction)])
    return detector


def run_one(data_name, setting, seed):
    X, y = harness.load(data_name)
    params, fraction, steps = SETTINGS[setting]
    with warnings.catch_warnings(), harness.torch_threads(1):
        warnings.simplefilter("ignore")
        detector = VAEOutlierDetector(
            support_fraction=1.0, random_state=seed, device="cpu", **params
        ).fit(X)
        outlyingness = -support_steps(detector, X, fraction, steps).score_samples(X)
    return (
        data_name,
        setting,
        seed,
        roc_auc_score(y, outlyingness),
        average_precision_score(y, outlyingness),
    )


def main(argv=None):
    parser = harness.argument_parser(
        __doc__, runs="anomaly_support.jsonl", data=True, seeds=2
    )
    args = parser.parse_args(argv)
    names, results = harness.run_study(run_one, SETTINGS, args)
    metrics = {}  # setting -> data set -> list of (auc, ap)
    for data_name, setting, _, auc, ap in results:
        metrics.setdefault(setting, {}).setdefault(data_name, []).append((auc, ap))
    rows = []
    for setting in SETTINGS:
        per_data = metrics.get(setting, {})
        if len(per_data) < len(names):
            continue
        means = {d: np.mean(per_data[d], axis=0) for d in names}
        overall = np.mean(list(means.values()), axis=0)
        cells = [f"{means[d][0]:.2f} / {means[d][1]:.2f}" for d in names]
        rows.append([setting, f"{overall[0]:.3f} / {overall[1]:.3f}", *cells])
    harness.publish(
        [
            harness.command(argv),
            "",
            *harness.header(),
            f"Mean over {len(names)} data sets and {args.seeds} seeds; per data set, "
            "ROC AUC / average precision.",
            "",
            *harness.table(["setting", "mean", *names], rows),
        ]
    )


if __name__ == "__main__":
    main()
