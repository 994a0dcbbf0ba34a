"""The closed-form start's noise model with fewer latent dimensions than features.

With ``n_components`` below the number of features and a per-feature decoder
variance (the default ``decoder_variance="feature"``), the linear start is
the maximum-likelihood factor analysis of the rows' covariance; before, it
was probabilistic PCA, whose one noise variance (in standardized units) is
the maximum-likelihood fit of a shared variance only. This script fits
``GaussianVAE(n_components=k, random_state=0)`` both ways on the seed-0
split of ``benchmarks/likelihood.py`` (the same cleaned, dequantized rows,
75 % to train, 25 % held out) and reports the held-out log-likelihood per
row, in the units of X. "probabilistic PCA" is the same code with the start
forced back to it. Settings: ``k2`` and ``k5`` (the default network with 2
and 5 latent dimensions) and ``lin_k2`` (no hidden layers, 2 dimensions).

    OMP_NUM_THREADS=1 python benchmarks/linear_start_noise.py
        [--data NAME ...] [--runs FILE] [--n-jobs 1] [--no-run] [--write-docs]
"""

import functools
import time
import warnings
from unittest import mock

import _common as harness
import numpy as np
from _density_data import real_split

import skvae._base
from skvae import GaussianVAE

DATA = (
    "breastw",
    "cardio",
    "fault",
    "ionosphere",
    "pima",
    "wine",
    "yeast",
    "stamps",
    "wdbc",
    "hepatitis",
)
SETTINGS = {
    "k2": {"n_components": 2},
    "k5": {"n_components": 5},
    "lin_k2": {"n_components": 2, "hidden_layer_sizes": []},
}
STARTS = ("probabilistic PCA", "factor analysis")
# A held-out difference smaller than this (nats per row) counts as a tie.
TIE = 0.01


def _isotropic(function):
    """``probabilistic_pca`` with its noise forced to one variance."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        kwargs["per_feature_noise"] = False
        return function(*args, **kwargs)

    return wrapper


def run_one(name, setting, start):
    """[name, setting, start, held-out score, seconds, init_] of one fit."""
    X, X_test = real_split(name, 0)
    params = SETTINGS[setting]
    patch = mock.patch.object(
        skvae._base,
        "probabilistic_pca",
        _isotropic(skvae._base.probabilistic_pca),
    )
    with warnings.catch_warnings(), harness.torch_threads(1):
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
        if start == STARTS[0]:
            patch.start()
        try:
            tic = time.perf_counter()
            vae = GaussianVAE(random_state=0, device="cpu", **params).fit(X)
            seconds = time.perf_counter() - tic
        finally:
            if start == STARTS[0]:
                patch.stop()
        score = float(vae.score(X_test))
    return [name, setting, start, score, seconds, vae.init_]


def main(argv=None):
    parser = harness.argument_parser(
        __doc__, docs_section="linear_start_noise", runs="", data=True
    )
    parser.add_argument("--no-run", action="store_true", help="only tabulate --runs")
    args = parser.parse_args(argv)
    names = args.data or list(DATA)
    jobs = [(n, s, start) for n in names for s in SETTINGS for start in STARTS]
    results = harness.resumable_runs(
        run_one,
        jobs,
        args.runs,
        args.n_jobs,
        not args.no_run,
        fingerprint=lambda n, s, start: {"params": SETTINGS[s]},
    )
    score = {tuple(r[:3]): r[3] for r in results}
    rows, gains = [], {s: [] for s in SETTINGS}
    for setting in SETTINGS:
        for name in names:
            before, after = (score.get((name, setting, start)) for start in STARTS)
            if before is None or after is None:
                continue
            gains[setting].append(after - before)
            rows.append(
                [
                    name,
                    setting,
                    f"{before:.3f}",
                    f"{after:.3f}",
                    f"{after - before:+.3f}",
                ]
            )
    summary = []
    for setting, values in gains.items():
        values = np.array(values)
        if values.size:
            summary.append(
                f"- {setting}: factor analysis minus probabilistic PCA, mean "
                f"{values.mean():+.3f}, median {np.median(values):+.3f} nats/row; "
                f"higher on {(values > TIE).sum()}, lower on "
                f"{(values < -TIE).sum()} of {values.size} data sets "
                f"(a tie within {TIE})."
            )
    lines = [
        harness.command(argv),
        "",
        *harness.header(),
        "Held-out log-likelihood per row of GaussianVAE(n_components=k, "
        "random_state=0), seed-0 split, one torch thread; higher is better.",
        "",
        *harness.table(
            ["data set", "setting", "probabilistic PCA", "factor analysis", "gain"],
            rows,
            align="llrrr",
        ),
        "",
        *summary,
    ]
    harness.publish(lines, "linear_start_noise", args.write_docs)


if __name__ == "__main__":
    main()
