"""Unsupervised outlier detection on real data: VAEOutlierDetector against the classics.

Protocol: for each data set in ``../shared/data/anomaly`` (ADBench/ODDS), fit
every detector on all rows without labels, score all rows, and compare the
scores with the labels by ROC AUC and average precision (AP). Default
parameters throughout, no per-data-set tuning; LocalOutlierFactor and
OneClassSVM, which depend on the units of each feature, get standardized
inputs (the VAE standardizes internally, IsolationForest is unit-free, and
PyOD's VAE standardizes by default). PyOD's VAE runs when pyod is installed
(``pip install skvae[benchmark]``). Each run uses one torch thread.

Prints markdown tables (mean ± sd over seeds, per data set and the mean over
data sets); ``--write-docs`` writes them into docs/benchmarks.md between the
``anomaly`` markers.

    OMP_NUM_THREADS=1 python benchmarks/anomaly.py [--seeds 5] [--n-jobs 1]
        [--runs FILE] [--detectors NAME ...] [--data NAME ...] [--no-run]
        [--write-docs]

With ``--runs FILE``, each run is appended to a JSON-lines file as it ends and
runs already there are not repeated, so a long benchmark can be resumed or
run in parts (``--detectors`` picks some) and then tabulated (``--no-run``).
"""

import time
import warnings

import _common as harness
import numpy as np
from sklearn.covariance import EllipticEnvelope
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from skvae import VAEOutlierDetector

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
    X, y = harness.load(data_name)
    tic = time.perf_counter()
    with warnings.catch_warnings(), harness.torch_threads(1):
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


def table(metric, results, names, datasets, seeds):
    """Markdown table of one metric: rows are data sets, columns detectors.

    ``results[data_name, name]`` maps each seed to its metrics. A column with
    fewer seeds than asked for says how many it has.
    """
    columns = ["data set"]
    for name in names:
        n_seeds = min(len(results.get((d, name), {})) for d in datasets)
        columns.append(name if n_seeds == seeds else f"{name} ({n_seeds} seeds)")
    lines = harness.table_head(columns)
    for data_name in datasets:
        cells = [
            harness.mean_sd(
                [run[metric] for run in results.get((data_name, name), {}).values()]
            )
            for name in names
        ]
        lines.append(harness.table_row([data_name, *cells]))
    means = []
    for name in names:
        # Mean over data sets for each seed run on all of them; spread over seeds.
        complete = set.intersection(
            *(set(results.get((d, name), {})) for d in datasets)
        )
        per_seed = [
            np.mean([results[d, name][seed][metric] for d in datasets])
            for seed in sorted(complete)
        ]
        means.append(f"**{harness.mean_sd(per_seed)}**")
    lines.append(harness.table_row(["**mean**", *means]))
    return lines


def main(argv=None):
    parser = harness.argument_parser(
        __doc__, docs_section="anomaly", runs="", data=True, seeds=5
    )
    parser.add_argument("--detectors", nargs="+", choices=DETECTORS)
    parser.add_argument(
        "--no-run", action="store_true", help="only tabulate the runs in --runs"
    )
    args = parser.parse_args(argv)

    has_pyod = harness.pyod_version() is not None
    names = args.detectors or [n for n in DETECTORS if has_pyod or n != "PyOD VAE"]
    lines = [harness.command(argv), "", *harness.header()]
    datasets, outputs = harness.run_study(evaluate, names, args, run=not args.no_run)
    results = {}
    for data_name, name, seed, auc, ap, seconds, flagged in outputs:
        results.setdefault((data_name, name), {})[seed] = {
            "auc": auc,
            "ap": ap,
            "seconds": seconds,
            "flagged": flagged,
        }

    if args.no_run:
        lines[0] += (
            " (tabulates the runs recorded in that file by earlier, resumable "
            "invocations with the same --runs)"
        )
    lines += [
        "Unsupervised protocol: fit on all rows without labels, score all rows. "
        "Default parameters, no tuning; LocalOutlierFactor and OneClassSVM get "
        "standardized inputs. Mean ± sd over "
        f"{args.seeds} seeds; the mean row averages over data sets per seed.",
        "",
        "ROC AUC:",
        "",
        *table("auc", results, names, datasets, args.seeds),
        "",
        "Average precision:",
        "",
        *table("ap", results, names, datasets, args.seeds),
    ]
    if "VAEOutlierDetector" in names:
        lines += [
            "",
            "VAEOutlierDetector's default threshold (contamination='auto', Tukey's "
            "fence on the training log-likelihoods): fraction of rows flagged "
            "against the true fraction of anomalies.",
            "",
            *harness.table_head(["data set", "flagged", "anomalies"]),
        ]
        for data_name in datasets:
            flagged = [
                run["flagged"]
                for run in results.get((data_name, "VAEOutlierDetector"), {}).values()
            ]
            anomalies = np.mean(harness.load(data_name)[1])
            lines.append(
                harness.table_row(
                    [data_name, f"{np.mean(flagged):.3f}", f"{anomalies:.3f}"]
                )
            )
    lines += [
        "",
        "Fit + score seconds per run, mean over data sets and seeds (one "
        "thread each; wall clock, so only comparable within one run): "
        + ", ".join(
            f"{name} {np.mean([r['seconds'] for d in datasets for r in results.get((d, name), {}).values()]):.1f}"
            for name in names
        )
        + ".",
    ]
    harness.publish(lines, "anomaly", args.write_docs)


if __name__ == "__main__":
    main()
