"""What VAEOutlierDetector's support steps and model size do to detection.

Fits VAEOutlierDetector on all rows of each data set in
``../shared/data/anomaly`` (unsupervised: the anomalies stay in the training
data), ranks all rows by ``score_samples`` and prints mean ROC AUC and average
precision over the data sets, per setting:

- the support fraction and the number of support steps, with the earlier
  model (``hidden_layer_sizes=(16,)``, ``n_components=2``); "control" fits
  once on all rows and then three more times on all rows (``warm_start``),
  so it trains as long as the support steps without setting rows aside;
- the network and latent size, with the default support steps.

The user guide's tables (docs/guide/outlier_detection.rst) come from this
script. Each run is appended to a JSON-lines file as it ends; rerunning with
the same file skips the runs already there.

    python benchmarks/anomaly_support.py [--seeds 2] [--n-jobs 1] [--runs FILE]
"""

import argparse
import os
import platform
import sys
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import sklearn
import torch
from _anomaly_runs import DATA_DIR, data_names, resumable_runs
from sklearn.metrics import average_precision_score, roc_auc_score

from skvae import VAEOutlierDetector, _outlier

EARLIER = {"hidden_layer_sizes": (16,), "n_components": 2}
# name -> (parameters, number of support steps, "control" or None)
SETTINGS = {
    "(16,), 2: one fit (1.0)": ({**EARLIER, "support_fraction": 1.0}, 3, None),
    "(16,), 2: 1.0 + 3 fits on all rows": (
        {**EARLIER, "support_fraction": 1.0},
        3,
        "control",
    ),
    "(16,), 2: 0.85, 3 steps": ({**EARLIER, "support_fraction": 0.85}, 3, None),
    "(16,), 2: 0.75, 1 step": ({**EARLIER, "support_fraction": 0.75}, 1, None),
    "(16,), 2: 0.75, 2 steps": ({**EARLIER, "support_fraction": 0.75}, 2, None),
    "(16,), 2: 0.75, 3 steps": ({**EARLIER, "support_fraction": 0.75}, 3, None),
    "(16,), 2: 0.65, 3 steps": ({**EARLIER, "support_fraction": 0.65}, 3, None),
    "(), None: 0.75, 3 steps (default)": ({}, 3, None),
    "(), None: one fit (1.0)": ({"support_fraction": 1.0}, 3, None),
    "(), 8: 0.75, 3 steps": ({"n_components": 8}, 3, None),
    "(16,), None: 0.75, 3 steps": ({"hidden_layer_sizes": (16,)}, 3, None),
    "(32,), 8: 0.75, 3 steps": (
        {"hidden_layer_sizes": (32,), "n_components": 8},
        3,
        None,
    ),
}


def run_one(data_name, setting, seed):
    data = np.load(DATA_DIR / f"{data_name}.npz")
    X, y = data["X"], data["y"]
    params, steps, variant = SETTINGS[setting]
    torch.set_num_threads(1)
    with warnings.catch_warnings(), mock.patch.object(_outlier, "SUPPORT_STEPS", steps):
        warnings.simplefilter("ignore")
        detector = VAEOutlierDetector(random_state=seed, device="cpu", **params)
        detector.fit(X)
        if variant == "control":
            detector.set_params(warm_start=True)
            for _ in range(steps):
                detector.fit(X)
        outlyingness = -detector.score_samples(X)
    return (
        data_name,
        setting,
        seed,
        roc_auc_score(y, outlyingness),
        average_precision_score(y, outlyingness),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--runs", type=Path, default=Path("anomaly_support.jsonl"))
    args = parser.parse_args(argv)
    names = data_names()
    done = resumable_runs(run_one, SETTINGS, names, args.seeds, args.runs, args.n_jobs)
    table = {}  # setting -> data set -> list of (auc, ap)
    for data_name, setting, seed, auc, ap in done:
        if setting in SETTINGS and seed < args.seeds:
            table.setdefault(setting, {}).setdefault(data_name, []).append((auc, ap))
    print(
        f"Command: `python benchmarks/anomaly_support.py {' '.join(argv or sys.argv[1:])}`"
    )
    print(
        f"Versions: torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}; {platform.machine()}, {os.cpu_count()} cores."
    )
    print()
    print(
        f"Mean over {len(names)} data sets and {args.seeds} seeds; per data set, "
        "ROC AUC / average precision."
    )
    print()
    print("| setting | mean | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 2) + "|")
    for setting in SETTINGS:
        per_data = table.get(setting, {})
        if len(per_data) < len(names):
            continue
        means = {d: np.mean(per_data[d], axis=0) for d in names}
        overall = np.mean(list(means.values()), axis=0)
        cells = [f"{means[d][0]:.2f} / {means[d][1]:.2f}" for d in names]
        print(
            f"| {setting} | {overall[0]:.3f} / {overall[1]:.3f} | "
            + " | ".join(cells)
            + " |"
        )


if __name__ == "__main__":
    main()
