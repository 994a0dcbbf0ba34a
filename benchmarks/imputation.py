"""Imputation RMSE of VAEImputer against scikit-learn's imputers.

On real data sets (labels ignored; large ones subsampled), a fraction of the
entries is removed completely at random (MCAR); each imputer fills them in
from the incomplete data alone (fit_transform), and the RMSE on the removed
entries is measured in standardized units (each feature divided by its
standard deviation in the complete data), so that data sets compare. Prints
one markdown table per missing rate (mean RMSE over seeds, best in bold),
with the command, versions and machine; ``--write-docs`` puts it into
docs/benchmarks.md between the ``imputation`` markers (``--append``: after
the tables already there).

    OMP_NUM_THREADS=1 python benchmarks/imputation.py [--seeds 5]
        [--rates 0.1 0.3 0.5] [--max-rows 2000] [--quick] [--vae JSON ...]
        [--data NAME ...]
        [--runs FILE] [--n-jobs 1] [--write-docs [--append]]

With ``--runs FILE``, each finished cell (data set, imputer, rate, seed) is
appended to a JSON-lines file, and cells already there are not run again; a
cell recorded on other rows (``--max-rows``) stops the script.
"""

import json
import sys
import time
import warnings

import _common as harness
import numpy as np
from sklearn.datasets import fetch_california_housing
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

from skvae import VAEImputer


def datasets(quick, max_rows, names=None):
    """(name, X) pairs, only of ``names`` if given.

    Rows beyond ``max_rows`` are subsampled (seed 0).
    """

    def wanted(name):
        return names is None or name in names

    for name in ("diabetes", "wine_sklearn", "breast_cancer"):
        if wanted(name):
            yield name, harness.SKLEARN[name](return_X_y=True)[0]
    if quick:
        return
    if wanted("california"):
        try:
            california = fetch_california_housing(download_if_missing=False).data
        except OSError:
            print("california housing not cached: skipped", file=sys.stderr)
        else:
            yield "california", _subsample(california, max_rows)
    for name in filter(wanted, harness.data_names()):
        X = harness.load(name)[0].astype(np.float64)
        yield name, _subsample(X, max_rows)


def _subsample(X, max_rows):
    if X.shape[0] <= max_rows:
        return X
    rows = np.random.default_rng(0).choice(X.shape[0], max_rows, replace=False)
    return X[np.sort(rows)]


def imputers(vae_settings):
    """Name -> factory(seed); one VAEImputer per dict of keyword arguments."""
    makers = {}
    for params in vae_settings:
        arguments = ", ".join(f"{k}={v!r}" for k, v in params.items())
        makers[f"VAEImputer({arguments})"] = lambda s, p=params: VAEImputer(
            random_state=s, **p
        )
    return {
        **makers,
        "IterativeImputer": lambda s: IterativeImputer(random_state=s),
        "KNNImputer": lambda s: KNNImputer(),
        "SimpleImputer(mean)": lambda s: SimpleImputer(),
    }


def remove_completely_at_random(X, rate, seed):
    rng = np.random.default_rng([seed, int(rate * 1000)])
    X_missing = X.copy()
    X_missing[rng.random(X.shape) < rate] = np.nan
    return X_missing


def rmse(X, X_missing, X_imputed):
    """RMSE over the removed entries, each feature in units of its sd."""
    scale = X.std(0)
    scale[scale == 0] = 1.0
    missing = np.isnan(X_missing)
    errors = ((X_imputed - X) / scale)[missing]
    return float(np.sqrt(np.mean(errors**2)))


def run_cell(make, X, rate, seed):
    """RMSE and seconds of one imputer on X with ``rate`` of it removed."""
    X_missing = remove_completely_at_random(X, rate, seed)
    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        X_imputed = make(seed).fit_transform(X_missing)
    return rmse(X, X_missing, X_imputed), time.perf_counter() - tic


def bold_best(values):
    """Cells to three decimals, the lowest in bold."""
    best = min(values)
    return [f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in values]


def table(results, names, shapes, rate):
    """Mean RMSE per data set and imputer at one missing rate, as lines."""
    rows, means = [], {n: [] for n in names}
    for data_name, (n, d) in shapes.items():
        row = [np.mean(results[data_name][name][rate]["rmse"]) for name in names]
        for name, value in zip(names, row, strict=True):
            means[name].append(value)
        rows.append([f"{data_name} ({n}x{d})", *bold_best(row)])
    rows.append(["**mean**", *bold_best([np.mean(v) for v in means.values()])])
    ranks = np.mean(
        [
            np.argsort(np.argsort([means[n][i] for n in names])) + 1
            for i in range(len(shapes))
        ],
        axis=0,
    )
    rows.append(["mean rank", *(f"{r:.1f}" for r in ranks)])
    seconds = [
        np.mean([np.mean(results[d][n][rate]["seconds"]) for d in shapes])
        for n in names
    ]
    rows.append(["seconds per fit_transform", *(f"{s:.1f}" for s in seconds)])
    return [
        f"Missing completely at random: {rate:.0%} of the entries.",
        "",
        *harness.table(["data set (n x D)", *names], rows),
    ]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = harness.argument_parser(
        __doc__, docs_section="imputation", runs="", data=True, seeds=5
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    parser.add_argument("--max-rows", type=int, default=2000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--vae",
        type=json.loads,
        action="append",
        help="VAEImputer keyword arguments as JSON; repeat for more columns "
        "(default: one column with the defaults)",
    )
    parser.add_argument(
        "--append", action="store_true", help="with --write-docs, add to the section"
    )
    args = parser.parse_args(argv)

    makers = imputers(args.vae or [{}])
    names = list(makers)
    data = dict(datasets(args.quick, args.max_rows, args.data))
    if args.data and set(args.data) - set(data):
        parser.error(f"unknown data sets {sorted(set(args.data) - set(data))}")

    def run_one(data_name, name, rate, seed):
        return (
            data_name,
            name,
            rate,
            seed,
            *run_cell(makers[name], data[data_name], rate, seed),
        )

    jobs = [
        (d, name, rate, seed)
        for d in data
        for name in names
        for rate in args.rates
        for seed in range(args.seeds)
    ]
    results = {d: {name: {} for name in names} for d in data}
    # A cell's result depends on the rows it runs on (--max-rows), beyond its job.
    for d, name, rate, _, error, seconds in harness.resumable_runs(
        run_one,
        jobs,
        args.runs,
        args.n_jobs,
        fingerprint=lambda d, name, rate, seed: {"rows": len(data[d])},
    ):
        cell = results[d][name].setdefault(rate, {"rmse": [], "seconds": []})
        cell["rmse"].append(error)
        cell["seconds"].append(seconds)
    shapes = {d: X.shape for d, X in data.items()}

    lines = [
        harness.command(argv),
        "",
        *harness.header(),
        "RMSE on the removed entries in standardized units (each feature divided "
        "by its standard deviation in the complete data), mean over "
        f"{args.seeds} seeds; each imputer is fitted on the incomplete data alone "
        "with its default parameters unless its column names others. IterativeImputer's default estimator is BayesianRidge, so "
        "IterativeImputer(estimator=BayesianRidge()) gives the same numbers. "
        f"Data sets with more than {args.max_rows} rows are subsampled.",
    ]
    for rate in args.rates:
        lines += [""] + table(results, names, shapes, rate)
    if args.append:
        lines = [harness.read_docs("imputation"), "", *lines]
    harness.publish(lines, "imputation", args.write_docs)


if __name__ == "__main__":
    main()
