"""The defaults on an accelerator against the CPU of the same machine.

For each data set, fits each estimator at its defaults on ``--device`` (CUDA
by default) and on the CPU, one after the other in one process, and prints
what should agree and what should not:

- ``VAEOutlierDetector``, fitted on all rows of the data sets in
  ``../shared/data/anomaly`` (anomalies included): ROC AUC and average
  precision on each device, the largest difference between the two devices'
  scores, the share of rows each flags, and fit-plus-score seconds;
- ``GaussianVAE``, on the 75/25 split of benchmarks/likelihood.py (seed 0):
  the held-out mean log-likelihood on each device, whether each kept its
  closed-form start, and fit seconds. A kept start is computed in float64
  from the same NumPy fit, so its score agrees across devices to rounding; a
  trained network does not (a seed gives other draws on a GPU).

Each result is appended to a JSON-lines file as it ends, and a rerun with the
same file skips what is there, so that a run cut short by a time limit
resumes. Nothing is written to the docs: docs/benchmarks.md ("On a GPU")
quotes the figures by hand. benchmarks/device_check.sh runs this after the
test suite, within one call's limit.

    OMP_NUM_THREADS=1 python benchmarks/devices.py [--device cuda]
        [--estimators VAEOutlierDetector GaussianVAE] [--runs devices.jsonl]
        [--data NAME ...]
"""

import time
import warnings

import _common as harness
import _density_data as density_data
import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import average_precision_score, roc_auc_score

from skvae import GaussianVAE, VAEOutlierDetector

ESTIMATORS = ("VAEOutlierDetector", "GaussianVAE")


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def detector_run(X, device):
    """Scores, flagged share and seconds of the default detector on ``device``."""
    start = time.perf_counter()
    detector = VAEOutlierDetector(random_state=0, device=device).fit(X)
    scores = detector.score_samples(X)
    _synchronize(device)
    seconds = time.perf_counter() - start
    return scores, float(np.mean(scores < detector.offset_)), seconds


def density_run(X_train, X_test, device):
    """Held-out score, kept start and seconds of the default GaussianVAE."""
    start = time.perf_counter()
    vae = GaussianVAE(random_state=0, device=device).fit(X_train)
    _synchronize(device)
    seconds = time.perf_counter() - start
    return vae.score(X_test), bool(vae._history.kept_start), seconds


def run_one(name, estimator, device):
    """One data set and estimator on ``device`` and the CPU, as a JSON row."""
    devices = [torch.device(device), torch.device("cpu")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if estimator == "VAEOutlierDetector":
            X, y = harness.load(name)
            runs = [detector_run(X.astype(float), d) for d in devices]
            (accelerated, *_), (cpu, *_) = runs
            info = {
                "roc_auc": [roc_auc_score(y, -s) for s, *_ in runs],
                "average_precision": [average_precision_score(y, -s) for s, *_ in runs],
                "max_score_difference": float(np.max(np.abs(accelerated - cpu))),
                "flagged": [share for _, share, _ in runs],
                "finite": bool(np.isfinite(accelerated).all()),
            }
        else:
            X_train, X_test = density_data.real_split(name, 0)
            runs = [density_run(X_train, X_test, d) for d in devices]
            info = {
                "score": [score for score, _, _ in runs],
                "kept_start": [kept for _, kept, _ in runs],
            }
    info["seconds"] = [seconds for *_, seconds in runs]
    return [name, estimator, device, info]


def report(results, device):
    """The lines printed for ``results``, one per data set and estimator."""
    lines = []
    for name, estimator, _, info in sorted(results, key=lambda r: (r[1], r[0])):
        seconds = "{:.2f} s / {:.2f} s".format(*info["seconds"])
        if estimator == "VAEOutlierDetector":
            lines.append(
                f"{estimator} {name:18s} ROC {info['roc_auc'][0]:.4f}/"
                f"{info['roc_auc'][1]:.4f} AP {info['average_precision'][0]:.4f}/"
                f"{info['average_precision'][1]:.4f} max|score diff| "
                f"{info['max_score_difference']:.1e} flagged "
                f"{info['flagged'][0]:.4f}/{info['flagged'][1]:.4f} {seconds}"
                + ("" if info["finite"] else " NOT FINITE")
            )
        else:
            score, kept = info["score"], info["kept_start"]
            lines.append(
                f"{estimator} {name:18s} score {score[0]:.4f}/{score[1]:.4f} "
                f"(diff {score[0] - score[1]:+.1e}) kept start {kept[0]}/{kept[1]} "
                f"{seconds}"
            )
    return [f"Each pair: {device} / cpu.", *lines]


def main(argv=None):
    parser = harness.argument_parser(__doc__, runs="devices.jsonl", data=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--estimators", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS)
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    harness.log("\n".join(harness.header(device)))
    names = harness.data_names(args.data)
    # The estimators' own first-call costs (CUDA context, kernels) are not
    # counted in the first data set's time.
    X = np.random.default_rng(0).normal(size=(200, 4))
    for d in (device, torch.device("cpu")):
        GaussianVAE(max_iter=1, device=d, random_state=0).fit(X)
    jobs = [(name, e, args.device) for e in args.estimators for name in names]
    results = []
    for result in harness.resumable_runs(run_one, jobs, args.runs, args.n_jobs):
        results.append(result)
        harness.log(report([result], device)[-1])
    harness.log()
    harness.log("\n".join(report(results, device)))


if __name__ == "__main__":
    with harness.torch_threads(1):
        main()
