"""Imputation RMSE of VAEImputer against scikit-learn's imputers.

On real data sets (labels ignored; large ones subsampled), a fraction of the
entries is removed completely at random (MCAR); each imputer fills them in
from the incomplete data alone (fit_transform), and the RMSE on the removed
entries is measured in standardized units (each feature divided by its
standard deviation in the complete data), so that data sets compare. Prints
one markdown table per missing rate (mean RMSE over seeds, best in bold),
with the command, versions and machine; ``--write`` puts it into
docs/benchmarks.md between the ``imputation`` markers.

    python benchmarks/imputation.py [--seeds 5] [--rates 0.1 0.3 0.5]
        [--max-rows 2000] [--quick] [--vae JSON ...] [--cache FILE]
        [--write [--append]]
"""

import argparse
import json
import os
import platform
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.datasets import (
    fetch_california_housing,
    load_breast_cancer,
    load_diabetes,
    load_wine,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

from skvae import VAEImputer

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(
    os.environ.get("SKVAE_DATA_DIR", ROOT / ".." / "shared" / "data" / "anomaly")
)
DOCS = ROOT / "docs" / "benchmarks.md"


def datasets(quick, max_rows):
    """(name, X) pairs; rows beyond ``max_rows`` are subsampled (seed 0)."""
    yield "diabetes", load_diabetes(return_X_y=True, scaled=False)[0]
    yield "wine", load_wine(return_X_y=True)[0]
    yield "breast_cancer", load_breast_cancer(return_X_y=True)[0]
    if quick:
        return
    try:
        california = fetch_california_housing(download_if_missing=False).data
    except OSError:
        print("california housing not cached: skipped", file=sys.stderr)
    else:
        yield "california", _subsample(california, max_rows)
    for path in sorted(DATA_DIR.glob("*.npz")):
        yield path.stem, _subsample(np.load(path)["X"].astype(np.float64), max_rows)


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
    X_missing = remove_completely_at_random(X, rate, seed)
    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        X_imputed = make(seed).fit_transform(X_missing)
    return rmse(X, X_missing, X_imputed), time.perf_counter() - tic


def table(results, names, shapes, rate):
    lines = [
        f"Missing completely at random: {rate:.0%} of the entries.",
        "",
        "| data set (n x D) | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    means = {n: [] for n in names}
    for data_name, (n, d) in shapes.items():
        row = {name: np.mean(results[data_name][name][rate]["rmse"]) for name in names}
        best = min(row.values())
        cells = []
        for name in names:
            means[name].append(row[name])
            text = f"{row[name]:.3f}"
            cells.append(f"**{text}**" if row[name] == best else text)
        lines.append(f"| {data_name} ({n}x{d}) | " + " | ".join(cells) + " |")
    overall = {name: np.mean(v) for name, v in means.items()}
    best = min(overall.values())
    lines.append(
        "| **mean** | "
        + " | ".join(
            f"**{v:.3f}**" if v == best else f"{v:.3f}" for v in overall.values()
        )
        + " |"
    )
    ranks = np.mean(
        [
            np.argsort(np.argsort([means[n][i] for n in names])) + 1
            for i in range(len(shapes))
        ],
        axis=0,
    )
    lines.append("| mean rank | " + " | ".join(f"{r:.1f}" for r in ranks) + " |")
    seconds = [
        np.mean([np.mean(results[d][n][rate]["seconds"]) for d in shapes])
        for n in names
    ]
    lines.append(
        "| seconds per fit_transform | "
        + " | ".join(f"{s:.1f}" for s in seconds)
        + " |"
    )
    return lines


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
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
    parser.add_argument("--cache", type=Path, help="JSON file of finished cells")
    parser.add_argument("--write", action="store_true", help="update docs")
    parser.add_argument(
        "--append", action="store_true", help="with --write, add to the section"
    )
    args = parser.parse_args(argv)

    makers = imputers(args.vae or [{}])
    names = list(makers)
    cache = {}
    if args.cache and args.cache.exists():
        cache = json.loads(args.cache.read_text())
    results, shapes = {}, {}
    for data_name, X in datasets(args.quick, args.max_rows):
        shapes[data_name] = X.shape
        results[data_name] = {}
        for name in names:
            results[data_name][name] = {}
            for rate in args.rates:
                cell = {"rmse": [], "seconds": []}
                for seed in range(args.seeds):
                    key = f"{data_name}|{name}|{rate}|{seed}"
                    if key not in cache:
                        cache[key] = run_cell(makers[name], X, rate, seed)
                        if args.cache:  # atomic: a killed run keeps its cells
                            partial = args.cache.with_suffix(".tmp")
                            partial.write_text(json.dumps(cache))
                            partial.replace(args.cache)
                    cell["rmse"].append(cache[key][0])
                    cell["seconds"].append(cache[key][1])
                results[data_name][name][rate] = cell
        print(f"done {data_name}", file=sys.stderr, flush=True)

    lines = [
        f"Command: `OMP_NUM_THREADS=1 python benchmarks/imputation.py {' '.join(argv)}`",
        "",
        f"Versions: skvae {sys.modules['skvae'].__version__}, torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, Python "
        f"{platform.python_version()}; {platform.machine()} CPU "
        f"({os.cpu_count()} cores, shared), device cpu.",
        "",
        "RMSE on the removed entries in standardized units (each feature divided "
        "by its standard deviation in the complete data), mean over "
        f"{args.seeds} seeds; each imputer is fitted on the incomplete data alone "
        "with its default parameters unless its column names others. IterativeImputer's default estimator is BayesianRidge, so "
        "IterativeImputer(estimator=BayesianRidge()) gives the same numbers. "
        f"Data sets with more than {args.max_rows} rows are subsampled.",
    ]
    for rate in args.rates:
        lines += [""] + table(results, names, shapes, rate)
    text = "\n".join(lines)
    print(text)
    if args.write:
        docs = DOCS.read_text()
        pattern = r"(<!-- BEGIN imputation -->\n)(.*?)(\n<!-- END imputation -->)"
        if args.append:
            text = re.search(pattern, docs, flags=re.S)[2] + "\n\n" + text
        docs = re.sub(pattern, lambda m: m[1] + text + m[3], docs, flags=re.S)
        DOCS.write_text(docs)


if __name__ == "__main__":
    main()
