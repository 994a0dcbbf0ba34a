"""Outlier detection on incomplete rows: VAEOutlierDetector against imputed peers.

For each data set in ``../shared/data/anomaly`` but internetads (at most 10,000 rows, a
random subset drawn with seed 0), a fraction of the entries is removed
completely at random (seeded), every detector is fitted on all rows without
labels and scores all rows (a row with nothing observed is dropped), and
its scores are compared with the labels by ROC AUC and average precision.
VAEOutlierDetector takes the rows with NaN as they are; the peers, which do
not accept NaN, get them filled by ``SimpleImputer`` (the mean) or
``IterativeImputer`` in a pipeline, and so does one VAEOutlierDetector
(mean-filled) for comparison. ``--label`` renames the VAEOutlierDetector
column, so that runs of another version of the code (``PYTHONPATH``) can be
recorded beside it in the same runs file. Each run uses one torch thread.

    OMP_NUM_THREADS=1 python benchmarks/anomaly_missing.py [--rates 0.1 0.3]
        [--seeds 1] [--runs FILE] [--data NAME ...] [--detectors NAME ...]
        [--label NAME] [--no-run] [--write-docs]
"""

import time
import warnings

import _common as harness
import numpy as np
from sklearn.covariance import EllipticEnvelope
from sklearn.ensemble import IsolationForest
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, SimpleImputer
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.pipeline import make_pipeline

from skvae import VAEOutlierDetector

MAX_ROWS = 10_000
# All but internetads: on its 1,555 features IterativeImputer and MinCovDet
# do not finish in minutes.
DEFAULT_DATA = [
    "annthyroid",
    "breastw",
    "campaign",
    "cardio",
    "cardiotocography",
    "fault",
    "hepatitis",
    "ionosphere",
    "landsat",
    "lymphography",
    "magicgamma",
    "pima",
    "satellite",
    "stamps",
    "thyroid",
    "vertebral",
    "wdbc",
    "wine",
    "yeast",
]
SUBJECT = "VAEOutlierDetector"


def detectors(seed):
    """Each detector's name and a factory, the peers behind an imputer."""
    return {
        SUBJECT: lambda: VAEOutlierDetector(random_state=seed),
        "VAEOutlierDetector (mean-filled)": lambda: make_pipeline(
            SimpleImputer(), VAEOutlierDetector(random_state=seed)
        ),
        "IsolationForest (mean-filled)": lambda: make_pipeline(
            SimpleImputer(), IsolationForest(random_state=seed)
        ),
        "IsolationForest (iterative)": lambda: make_pipeline(
            IterativeImputer(random_state=seed), IsolationForest(random_state=seed)
        ),
        "EllipticEnvelope (mean-filled)": lambda: make_pipeline(
            SimpleImputer(), EllipticEnvelope(random_state=seed)
        ),
    }


def incomplete(name, rate, seed):
    """The data set's rows with ``rate`` of the entries removed, and the labels."""
    X, y = harness.load(name)
    X = X.astype(np.float64)
    if len(X) > MAX_ROWS:
        keep = np.random.default_rng(0).choice(len(X), MAX_ROWS, replace=False)
        X, y = X[keep], y[keep]
    X[np.random.default_rng(seed).random(X.shape) < rate] = np.nan
    kept = ~np.isnan(X).all(1)
    return X[kept], y[kept]


def run_one(name, detector, rate, seed, label=SUBJECT):
    X, y = incomplete(name, rate, seed)
    model = detectors(seed)[SUBJECT if detector == label else detector]()
    with warnings.catch_warnings(), harness.torch_threads(1):
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        scores = model.fit(X).score_samples(X)
        seconds = time.perf_counter() - start
        flagged = float(np.mean(model.predict(X) == -1))
    return [
        name,
        detector,
        rate,
        seed,
        roc_auc_score(y, -scores),
        average_precision_score(y, -scores),
        flagged,
        seconds,
    ]


def main():
    parser = harness.argument_parser(
        __doc__, docs_section="anomaly_missing", runs="", data=True, seeds=1
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--detectors", nargs="+", metavar="NAME")
    parser.add_argument("--label", default=SUBJECT)
    parser.add_argument("--no-run", action="store_true")
    args = parser.parse_args()
    names = harness.data_names(args.data or DEFAULT_DATA)
    known = [args.label, *(d for d in detectors(0) if d != args.label)]
    # --no-run may also tabulate the runs of other labels in --runs.
    unknown = set(args.detectors or ()) - set(known)
    if unknown and not args.no_run:
        parser.error(f"unknown detectors {sorted(unknown)}; known: {known}")
    chosen = args.detectors or [args.label, *list(detectors(0))[1:]]
    jobs = [
        (d, c, r, s)
        for s in range(args.seeds)
        for r in args.rates
        for c in chosen
        for d in names
    ]
    results = harness.resumable_runs(
        lambda *job: run_one(*job, label=args.label),
        jobs,
        args.runs,
        args.n_jobs,
        run=not args.no_run,
    )
    order = [args.label, *list(detectors(0))[1:]]
    # The detector first, then the runs of other versions, then the peers.
    columns = sorted(
        {r[1] for r in results},
        key=lambda c: (
            c != args.label,
            c in order,
            order.index(c) if c in order else c,
        ),
    )
    lines = [harness.command(), "", *harness.header()]
    lines += [
        "Mean ± sd over seeds (the entries removed and the detectors' seeds); "
        "the mean rows average the data sets' means.",
        "",
    ]
    for rate in args.rates:
        for metric, index in (("ROC AUC", 4), ("Average precision", 5)):
            cell = {}
            for r in results:
                if r[2] == rate:
                    cell.setdefault((r[0], r[1]), []).append(r[index])
            rows = [
                [name] + [harness.mean_sd(cell.get((name, c), [])) for c in columns]
                for name in names
            ]
            means = [
                np.mean([np.mean(cell[(n, c)]) for n in names])
                if all((n, c) in cell for n in names)
                else np.nan
                for c in columns
            ]
            rows.append(["**mean**"] + [f"**{m:.4f}**" for m in means])
            lines += [f"{metric}, {rate:.0%} of the entries missing:", ""]
            lines += harness.table(["data set", *columns], rows) + [""]
    harness.publish(lines, "anomaly_missing", args.write_docs)


if __name__ == "__main__":
    main()
