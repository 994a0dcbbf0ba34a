"""Random starts for VAEOutlierDetector's support steps, as FAST-MCD makes them.

A study, not a default (docs/guide/outlier_detection.rst, "Random starts").
The default detector runs its support steps (:func:`skvae._outlier.c_step`)
from the fit on all rows until the support repeats. Here, beside that path,
``--starts`` random subsets of ``D + 1`` rows each start a fit and get
``--first-steps`` steps; the ``--keep`` whose support rows are most likely
run to convergence, and the support of highest trimmed likelihood (the sum
of its rows' log-likelihoods under the model fitted to them) is kept, as in
MinCovDet. Prints mean ROC AUC and average precision over the data sets, per
seed, against the default's, and the data sets where they differ. A study of
the detector's internals, it subclasses the detector and calls its private
steps (``_fit_validated``, ``_train_on``, ``_log_likelihood``, ``c_step``),
where the other benchmarks use the public API only.

    OMP_NUM_THREADS=1 python benchmarks/anomaly_starts.py [--starts 10]
        [--keep 10] [--first-steps 2] [--seeds 0 1 2] [--skip internetads]
"""

import argparse
import math
import time
import warnings

import _common as harness
import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from skvae import VAEOutlierDetector
from skvae._outlier import MAX_SUPPORT_STEPS, TUKEY_FENCE, c_step


class RandomStarts(VAEOutlierDetector):
    """The default detector, its support chosen among random starts too."""

    starts, keep, first_steps, seed = 0, 0, 2, 0

    def _fit_validated(self, X, incremental):
        n_rows, n_features = X.shape
        n_support = max(1, math.ceil(self.support_fraction * n_rows))

        def fit(rows):
            return self._train_on(rows, incremental)

        def steps(n_steps):
            return c_step(X, n_support, self._log_likelihood, fit, n_steps)[0]

        def trimmed(support):
            return float(np.sum(self._log_likelihood(X[support])))

        fit(X)
        default = steps(MAX_SUPPORT_STEPS)
        finals = [(trimmed(default), 0, default)]
        rng = np.random.default_rng(self.seed)
        first = []
        for start in range(1, self.starts + 1):
            fit(X[rng.choice(n_rows, min(n_features + 1, n_rows), replace=False)])
            support = steps(self.first_steps)
            first.append((trimmed(support), start, support))
        for _, start, support in sorted(first, key=lambda t: -t[0])[: self.keep]:
            fit(X[support])
            support = steps(MAX_SUPPORT_STEPS)
            finals.append((trimmed(support), start, support))
        _, self.start_, self.support_ = max(finals, key=lambda t: t[0])
        fit(X[self.support_])
        lower, upper = np.percentile(self._log_likelihood(X), [25.0, 75.0])
        self.offset_ = float(lower - TUKEY_FENCE * (upper - lower))
        return True


def evaluate(detector, names):
    """ROC AUC, average precision, chosen start and seconds per data set."""
    results = {}
    for name in names:
        X, y = harness.load(name)
        tic = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = -detector.fit(X.astype(float)).score_samples(X.astype(float))
        results[name] = (
            roc_auc_score(y, score),
            average_precision_score(y, score),
            detector.start_,
            time.perf_counter() - tic,
        )
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--keep", type=int, default=10)
    parser.add_argument("--first-steps", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--skip", nargs="*", default=["internetads"])
    args = parser.parse_args(argv)
    for line in [harness.command(argv), "", *harness.header()]:
        print(line)
    names = [n for n in harness.data_names() if n not in args.skip]
    runs = {"default": evaluate(RandomStarts(), names)}
    for seed in args.seeds:
        detector = RandomStarts()
        detector.starts, detector.keep = args.starts, args.keep
        detector.first_steps, detector.seed = args.first_steps, seed
        runs[f"seed {seed}"] = evaluate(detector, names)
    print(f"{len(names)} data sets; mean ROC AUC, mean AP, total seconds")
    for label, results in runs.items():
        roc, ap, _, seconds = zip(*results.values(), strict=True)
        print(f"{label:>8}: {np.mean(roc):.4f} {np.mean(ap):.4f} {sum(seconds):.1f}")
    for name in names:
        roc = [results[name][0] for results in runs.values()]
        if max(roc) - min(roc) > 0.003:
            chosen = [results[name][2] for results in runs.values()][1:]
            cells = " ".join(f"{value:.3f}" for value in roc)
            print(f"{name}: ROC AUC {cells} (start kept: {chosen})")


if __name__ == "__main__":
    main()
