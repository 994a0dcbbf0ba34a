"""How many rows ``contamination="auto"`` flags, against other label-free thresholds.

A study, not a default (docs/guide/outlier_detection.rst, "The threshold").
Fits the default VAEOutlierDetector once on all rows of each data set whose
anomaly rate is under 10 % (its fit is deterministic), and on clean,
correlated Gaussian data (2,000 rows; 2, 5, 10 and 30 features; seeds 0 to
2), then applies each threshold to the training log-likelihoods. For each
threshold it prints the number of rows flagged over the true number of
anomalies per data set (target: between 0.5 and 2), how many data sets are in
that range, and the largest share of clean rows flagged (target: at most
2 %). Then it chooses a threshold by leaving one data set out (with its
variant), among those within the clean-data target: the one with the most
other data sets in range (ties: the smallest sum of |log ratio| over them),
and says whether the left-out data set is in range.

The thresholds:

- ``fence k``: Tukey's fence on the log-likelihoods, ``Q1 - k IQR``; the
  default is k = 4 (``skvae._outlier.TUKEY_FENCE``).
- on a transform of the squared Mahalanobis distance ``d2 = 2 (log p(mode)
  - log p(x))`` (the default model is a Gaussian, whose mode is its mean):
  the cube root (Wilson-Hilferty: close to normal for a chi-square) or the
  log, then an upper fence ``Q3 + k IQR``, the modified z-score of Iglewicz
  and Hoaglin (1993), ``0.6745 (t - median) / MAD > k``, or Chauvenet's
  criterion on the robust z-score (median, IQR / 1.349): flag where
  ``n P(Z > z) < c``, a cut that moves out with the number of rows (one
  tail: the classical two-sided criterion, ``n P(|Z| > z) < 0.5``, is
  ``c = 0.25`` here).
- with ``--pythresh``, the thresholders of PyThresh (``pip install
  pythresh``; those whose imports or fits fail are said and skipped) at their
  defaults, on minus the log-likelihoods.

    python benchmarks/anomaly_threshold.py [--pythresh] [--write-docs]
"""

import importlib
import inspect
import warnings

import _common as harness
import numpy as np
from anomaly import clean_gaussian
from anomaly_loo import left_out_with
from scipy.stats import norm

from skvae import VAEOutlierDetector
from skvae._outlier import TUKEY_FENCE

CLEAN_FEATURES = (2, 5, 10, 30)
CLEAN_SEEDS = (0, 1, 2)
CLEAN_ROWS = 2000
IN_RANGE = (0.5, 2.0)
CLEAN_TARGET = 0.02
# 24 of PyThresh's 31 thresholders, by module (clust and cpd need further
# packages; comb and meta combine others; vae trains a network; gamgmm and
# boot are slow here).
PYTHRESH = (
    "aucp chau clf decomp dsn eb fgd filter fwfm gesd hist iqr karch mad mcst "
    "mixmod moll mtt ocsvm qmcd regr wind yj zscore"
).split()


def fit_scores(X):
    """The default detector's training log-likelihoods and its mode's."""
    detector = VAEOutlierDetector(random_state=0).fit(X)
    scores = detector.score_samples(X)
    # The closed-form default is the Gaussian of its support rows: the mean
    # of those rows is its mode.
    mode = detector.score_samples(X[detector.support_].mean(axis=0, keepdims=True))
    assert mode[0] >= scores.max() - 1e-9, "the default model is not a Gaussian"
    return scores, float(mode[0])


# --------------------------------------------------------------- thresholds


def quartiles(t):
    return np.percentile(t, [25.0, 50.0, 75.0])


def lower_fence(k):
    def flag(scores, mode):
        q1, _, q3 = quartiles(scores)
        return scores < q1 - k * (q3 - q1)

    return flag


TRANSFORMS = {
    "cube root": lambda d2: np.cbrt(d2),
    "log": lambda d2: np.log(np.maximum(d2, 1e-300)),
}


def upper_fence(t, k):
    q1, _, q3 = quartiles(t)
    return t > q3 + k * (q3 - q1)


def modified_z(t, k):
    median = np.median(t)
    mad = np.median(np.abs(t - median))
    return 0.6745 * (t - median) > k * mad


def chauvenet(t, c):
    q1, median, q3 = quartiles(t)
    z = (t - median) / ((q3 - q1) / 1.349)
    return z > norm.isf(c / len(t))


RULES = {
    "upper fence": (upper_fence, (1.5, 2.0, 2.5, 3.0, 4.0)),
    "modified z": (modified_z, (2.5, 3.0, 3.5, 4.0, 5.0)),
    "Chauvenet": (chauvenet, (0.5, 0.25, 0.1, 0.01)),
}


def on_distance(transform, rule, k):
    def flag(scores, mode):
        return rule(TRANSFORMS[transform](2.0 * (mode - scores)), k)

    return flag


def pythresh_rules():
    """PyThresh's thresholders that import here, as flag functions."""
    rules = {}
    for name in PYTHRESH:
        try:
            module = importlib.import_module(f"pythresh.thresholds.{name}")
        except ImportError as error:
            harness.log(f"PyThresh {name}: not run ({error})")
            continue
        cls = next(
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if c.__module__ == module.__name__
        )
        rules[f"PyThresh {name}"] = lambda scores, mode, cls=cls: (
            cls().eval(-scores).astype(bool)
        )
    return rules


def all_rules(pythresh):
    rules = {f"fence {k}": lower_fence(k) for k in (1.5, 2, 2.5, 3, 3.5, 4, 5, 6)}
    for transform in TRANSFORMS:
        for rule, (flag, values) in RULES.items():
            for k in values:
                rules[f"{transform}, {rule} {k}"] = on_distance(transform, flag, k)
    if pythresh:
        rules.update(pythresh_rules())
    return rules


# -------------------------------------------------------------------- study


def measure(rules, fitted, clean):
    """Per rule: {data set: flagged / true} and the largest clean share."""
    ratios, clean_share = {}, {}
    for name, flag in rules.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ratio = {
                    d: flag(scores, mode).mean() / rate
                    for d, (scores, mode, rate) in fitted.items()
                }
                share = max(flag(s, m).mean() for s, m in clean)
        except Exception as error:  # a PyThresh fit that fails
            harness.log(f"{name}: failed ({type(error).__name__}: {error})")
            continue
        ratios[name], clean_share[name] = ratio, share
    return ratios, clean_share


def in_range(ratio):
    return IN_RANGE[0] <= ratio <= IN_RANGE[1]


def leave_one_out(ratios, clean_share, datasets, family):
    """(left out, rule chosen on the others, its ratio there) per data set.

    Chosen among the rules of ``family`` within the clean-data target.
    """
    allowed = [r for r in family if clean_share[r] <= CLEAN_TARGET]
    choices = []
    for left_out in datasets:
        others = [d for d in datasets if d not in left_out_with(left_out)]

        def merit(rule, others=others):
            r = ratios[rule]
            hits = sum(in_range(r[d]) for d in others)
            spread = sum(abs(np.log(max(r[d], 1e-3))) for d in others)
            return hits, -spread

        if not allowed:
            break
        chosen = max(allowed, key=merit)
        choices.append((left_out, chosen, ratios[chosen][left_out]))
    return choices


def main():
    parser = harness.argument_parser(__doc__, docs_section="anomaly_threshold")
    parser.add_argument("--pythresh", action="store_true", help="add PyThresh's")
    args = parser.parse_args()
    lines = [harness.command(), "", *harness.header()]
    if args.pythresh:
        from importlib.metadata import version

        lines += [f"PyThresh {version('pythresh')}.", ""]
    fitted = {}
    for name in harness.data_names():
        X, y = harness.load(name)
        if y.mean() < 0.1:
            fitted[name] = (*fit_scores(X), y.mean())
    clean = [
        fit_scores(clean_gaussian(s, (CLEAN_ROWS, p)))
        for p in CLEAN_FEATURES
        for s in CLEAN_SEEDS
    ]
    datasets = list(fitted)
    ratios, clean_share = measure(all_rules(args.pythresh), fitted, clean)
    columns = ["threshold", *datasets, "in range", "clean, most"]
    rows = [
        [
            name + (" (default)" if name == f"fence {TUKEY_FENCE:g}" else ""),
            *(f"{r[d]:.2f}" for d in datasets),
            f"{sum(in_range(r[d]) for d in datasets)}/{len(datasets)}",
            f"{100 * clean_share[name]:.1f} %",
        ]
        for name, r in ratios.items()
    ]
    lines += [
        "Rows flagged over true anomalies (target 0.5 to 2), and the largest "
        f"share of clean Gaussian rows flagged ({CLEAN_ROWS:,} rows, "
        f"{', '.join(map(str, CLEAN_FEATURES))} features, "
        f"{len(CLEAN_SEEDS)} seeds; target at most {CLEAN_TARGET:.0%}):",
        "",
        *harness.table(columns, rows, "l" + "r" * (len(columns) - 1)),
    ]
    families = {
        "Tukey's fence on the log-likelihoods": [
            r for r in ratios if r.startswith("fence ")
        ],
        "every threshold above": list(ratios),
    }
    for family, members in families.items():
        choices = leave_one_out(ratios, clean_share, datasets, members)
        hits = sum(in_range(x) for *_, x in choices)
        lines += [
            "",
            f"Leaving one data set out (with its variant), chosen among {family} "
            "within the clean target: the most other data sets in range.",
            "",
            *harness.table(
                ["left out", "chosen on the others", "ratio there", "in range"],
                [
                    [d, r, f"{x:.2f}", "yes" if in_range(x) else "no"]
                    for d, r, x in choices
                ],
                "llrl",
            ),
            "",
            f"Left out in range: {hits}/{len(choices)}.",
        ]
    harness.publish(lines, "anomaly_threshold", args.write_docs)


if __name__ == "__main__":
    main()
