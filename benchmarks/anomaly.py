"""Unsupervised outlier detection on real data: VAEOutlierDetector against the classics.

Protocol: for each data set in ``../shared/data/anomaly`` (ADBench/ODDS), fit
every detector on all rows without labels, score all rows, and compare the
scores with the labels by ROC AUC and average precision (AP). Default
parameters throughout, no per-data-set tuning; LocalOutlierFactor and
OneClassSVM, which depend on the units of each feature, get standardized
inputs (the VAE standardizes internally, IsolationForest is unit-free, and
PyOD's VAE standardizes by default). PyOD's VAE runs when pyod is installed
(``pip install skvae[benchmark]``).

Prints markdown tables (mean ± sd over seeds, per data set and the mean over
data sets) and writes them into docs/benchmarks.md between the ``anomaly``
markers.

    python benchmarks/anomaly.py [--seeds 5] [--n-jobs 1] [--no-write]
                                 [--runs FILE] [--detectors NAME ...]

With ``--runs FILE``, each run is appended to a JSON-lines file as it ends and
runs already there are not repeated, so a long benchmark can be resumed or
run in parts (``--detectors`` picks some) and then tabulated.
"""

import argparse
import importlib.util
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
from joblib import Parallel, delayed
from sklearn.covariance import EllipticEnvelope
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

import skvae
from skvae import VAEOutlierDetector

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(
    os.environ.get("SKVAE_DATA_DIR", ROOT / ".." / "shared" / "data" / "anomaly")
)
DOCS = ROOT / "docs" / "benchmarks.md"
HAS_PYOD = importlib.util.find_spec("pyod") is not None
# "one fit": support_fraction=1.0, the model fitted once on all rows (no
# support steps), the default before support steps were measured.
ONE_FIT = "VAEOutlierDetector, one fit"
DETECTORS = (
    "VAEOutlierDetector",
    ONE_FIT,
    "IsolationForest",
    "EllipticEnvelope",
    "LocalOutlierFactor",
    "PCA",
    "GaussianMixture",
    "OneClassSVM",
    "PyOD VAE",
)


def outlyingness(name, X, seed):
    """Fit detector ``name`` on X and return its outlyingness (higher = more abnormal).

    For VAEOutlierDetector, also the fraction of rows that its default
    ``predict`` (contamination="auto") flags.
    """
    if name in ("VAEOutlierDetector", ONE_FIT):
        params = {"support_fraction": 1.0} if name == ONE_FIT else {}
        detector = VAEOutlierDetector(random_state=seed, device="cpu", **params).fit(X)
        score = -detector.score_samples(X)
        return score, float(np.mean(score > -detector.offset_))
    if name == "IsolationForest":
        return -IsolationForest(random_state=seed).fit(X).score_samples(X), None
    if name == "EllipticEnvelope":
        envelope = EllipticEnvelope(random_state=seed).fit(X)
        return -envelope.score_samples(X), None
    if name == "LocalOutlierFactor":
        lof = LocalOutlierFactor().fit(StandardScaler().fit_transform(X))
        return -lof.negative_outlier_factor_, None
    if name == "PCA":
        return -PCA().fit(X).score_samples(X), None
    if name == "GaussianMixture":
        return -GaussianMixture(random_state=seed).fit(X).score_samples(X), None
    if name == "OneClassSVM":
        svm = make_pipeline(StandardScaler(), OneClassSVM()).fit(X)
        return -svm.decision_function(X), None
    if name == "PyOD VAE":
        from pyod.models.vae import VAE

        pyod_vae = VAE(random_state=seed, device="cpu", verbose=0).fit(X)
        return pyod_vae.decision_function(X), None
    raise ValueError(name)


def evaluate(data_name, name, seed):
    data = np.load(DATA_DIR / f"{data_name}.npz")
    X, y = data["X"], data["y"]
    torch.set_num_threads(1)
    tic = time.perf_counter()
    with warnings.catch_warnings():
        # Convergence, duplicate-row and ill-conditioning warnings of the
        # baselines are expected on these data and would flood the output.
        warnings.simplefilter("ignore")
        score, flagged = outlyingness(name, X, seed)
    seconds = time.perf_counter() - tic
    # PCA's full-rank density is infinite on data with a constant feature;
    # infinite outlyingness still ranks, as the largest finite value.
    score = np.nan_to_num(score)
    auc = roc_auc_score(y, score)
    ap = average_precision_score(y, score)
    return data_name, name, seed, auc, ap, seconds, flagged


def cell(values):
    if not len(values):
        return "–"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def table(metric, results, names, data_names, seeds):
    """Markdown table of one metric: rows are data sets, columns detectors.

    ``results[data_name, name]`` maps each seed to its metrics. A column with
    fewer seeds than asked for says how many it has.
    """
    header = []
    for name in names:
        n_seeds = min(len(results.get((d, name), {})) for d in data_names)
        header.append(name if n_seeds == seeds else f"{name} ({n_seeds} seeds)")
    lines = [
        "| data set | " + " | ".join(header) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for data_name in data_names:
        cells = [
            cell([run[metric] for run in results.get((data_name, name), {}).values()])
            for name in names
        ]
        lines.append(f"| {data_name} | " + " | ".join(cells) + " |")
    means = []
    for name in names:
        # Mean over data sets for each seed run on all of them; spread over seeds.
        complete = set.intersection(
            *(set(results.get((d, name), {})) for d in data_names)
        )
        per_seed = [
            np.mean([results[d, name][seed][metric] for d in data_names])
            for seed in sorted(complete)
        ]
        means.append(f"**{cell(per_seed)}**")
    lines.append("| **mean** | " + " | ".join(means) + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument(
        "--no-write", action="store_true", help="do not update docs/benchmarks.md"
    )
    parser.add_argument("--runs", type=Path, help="JSON-lines file of runs")
    parser.add_argument("--detectors", nargs="+", choices=DETECTORS)
    parser.add_argument(
        "--no-run", action="store_true", help="only tabulate the runs in --runs"
    )
    args = parser.parse_args(argv)

    names = args.detectors or [n for n in DETECTORS if HAS_PYOD or n != "PyOD VAE"]
    data_names = sorted(p.stem for p in DATA_DIR.glob("*.npz"))
    if not data_names:
        sys.exit(f"No .npz data sets in {DATA_DIR}; set SKVAE_DATA_DIR.")
    outputs = []
    if args.runs and args.runs.exists():
        outputs = [json.loads(line) for line in args.runs.read_text().splitlines()]
    outputs = [o for o in outputs if o[1] in names and o[2] < args.seeds]
    done = {tuple(o[:3]) for o in outputs}
    jobs = [
        (d, name, seed)
        for seed in range(args.seeds)
        for d in data_names
        for name in names
        if (d, name, seed) not in done and not args.no_run
    ]
    runs = Parallel(n_jobs=args.n_jobs, return_as="generator_unordered")(
        delayed(evaluate)(*job) for job in jobs
    )
    for output in runs:
        outputs.append(output)
        if args.runs:
            with args.runs.open("a") as file:
                file.write(json.dumps(output) + "\n")
    results = {}
    for data_name, name, seed, auc, ap, seconds, flagged in outputs:
        results.setdefault((data_name, name), {})[seed] = {
            "auc": auc,
            "ap": ap,
            "seconds": seconds,
            "flagged": flagged,
        }

    versions = (
        f"skvae {skvae.__version__}, torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}, numpy {np.__version__}"
    )
    if HAS_PYOD:
        import pyod

        versions += f", pyod {pyod.__version__}"
    command = " ".join(["python benchmarks/anomaly.py", *(argv or sys.argv[1:])])
    lines = [
        f"Command: `OMP_NUM_THREADS=1 {command}`"
        + (
            " (tabulates the runs recorded in that file by earlier, resumable "
            "invocations with the same --runs)"
            if args.no_run
            else ""
        ),
        "",
        f"Versions: {versions}, Python {platform.python_version()}; "
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores, CPU only.",
        "",
        "Unsupervised protocol: fit on all rows without labels, score all rows. "
        "Default parameters, no tuning; LocalOutlierFactor and OneClassSVM get "
        "standardized inputs. Mean ± sd over "
        f"{args.seeds} seeds; the mean row averages over data sets per seed.",
        "",
        "ROC AUC:",
        "",
        *table("auc", results, names, data_names, args.seeds),
        "",
        "Average precision:",
        "",
        *table("ap", results, names, data_names, args.seeds),
    ]
    if "VAEOutlierDetector" in names:
        lines += [
            "",
            "VAEOutlierDetector's default threshold (contamination='auto', Tukey's "
            "fence on the training log-likelihoods): fraction of rows flagged "
            "against the true fraction of anomalies.",
            "",
            "| data set | flagged | anomalies |",
            "|---|---|---|",
        ]
        for data_name in data_names:
            y = np.load(DATA_DIR / f"{data_name}.npz")["y"]
            flagged = [
                run["flagged"]
                for run in results.get((data_name, "VAEOutlierDetector"), {}).values()
            ]
            lines.append(f"| {data_name} | {np.mean(flagged):.3f} | {np.mean(y):.3f} |")
    lines += [
        "",
        "Fit + score seconds per run, mean over data sets and seeds (one "
        "thread each; wall clock, so only comparable within one run): "
        + ", ".join(
            f"{name} {np.mean([r['seconds'] for d in data_names for r in results.get((d, name), {}).values()]):.1f}"
            for name in names
        )
        + ".",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        document = DOCS.read_text()
        document = re.sub(
            r"(<!-- BEGIN anomaly -->\n).*?(<!-- END anomaly -->)",
            lambda m: m.group(1) + text + "\n" + m.group(2),
            document,
            flags=re.DOTALL,
        )
        DOCS.write_text(document)


if __name__ == "__main__":
    main()
