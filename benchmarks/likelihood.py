"""Held-out log-likelihood of GaussianVAE settings against linear-Gaussian baselines.

Chooses GaussianVAE's defaults by measurement: each setting is fitted on 75 %
of the rows of real data sets (in their raw units) and scored on the other
25 %, over several seeds. Prints a markdown table of mean held-out
log-likelihood per row (nats, in the data's own units, so comparable across
models on one data set but not across data sets), and the mean gain over
FactorAnalysis with the same number of components; ``--write-docs`` puts it
into docs/benchmarks.md between the ``likelihood`` markers.

    python benchmarks/likelihood.py [--seeds 3] [--quick] [--runs FILE]
        [--n-jobs 1] [--write-docs]

With ``--runs FILE``, each finished fit (data set, model, seed) is appended to
a JSON-lines file, and fits already there are not run again.
"""

import itertools
import time
import warnings

import _common as harness
import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.decomposition import PCA, FactorAnalysis
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split

from skvae import GaussianVAE

N_COMPONENTS = 2


def datasets(quick):
    yield "breast_cancer", load_breast_cancer(return_X_y=True)[0]
    yield "wine", load_wine(return_X_y=True)[0]
    yield "diabetes", load_diabetes(return_X_y=True, scaled=False)[0]
    if quick:
        return
    for name in harness.data_names():
        yield name, harness.load(name)[0]


def vae_settings(quick):
    """Name -> GaussianVAE keyword arguments (defaults unless named)."""
    settings = {
        "default": {},
        "shared": {"decoder_variance": "shared"},
        "heteroscedastic": {"decoder_variance": "heteroscedastic"},
        "min_variance=1e-2": {"min_variance": 1e-2},
        "min_variance=1e-6": {"min_variance": 1e-6},
        "tanh": {"activation": "tanh"},
        "early stopping": {"early_stopping": True},
    }
    if quick:
        settings = dict(itertools.islice(settings.items(), 3))
    return settings


def baselines():
    return {
        f"FactorAnalysis({N_COMPONENTS})": lambda s: FactorAnalysis(
            N_COMPONENTS, random_state=s
        ),
        f"PCA({N_COMPONENTS})": lambda s: PCA(N_COMPONENTS),
        "GaussianMixture(1, full)": lambda s: GaussianMixture(1, random_state=s),
    }


def held_out(make, X, seed):
    """Held-out log-likelihood per row of a 75/25 split, and the seconds it took."""
    X_train, X_test = train_test_split(X, test_size=0.25, random_state=seed)
    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        score = make(seed).fit(X_train).score(X_test)
    return score, time.perf_counter() - tic


def main(argv=None):
    parser = harness.argument_parser(
        __doc__, docs_section="likelihood", runs="", seeds=3
    )
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)

    models = dict(baselines())
    for name, kwargs in vae_settings(args.quick).items():
        models[f"VAE {name}"] = lambda s, kw=kwargs: GaussianVAE(
            N_COMPONENTS, random_state=s, **kw
        )
    names = list(models)
    data = dict(datasets(args.quick))

    def run_one(data_name, name, seed):
        return data_name, name, seed, *held_out(models[name], data[data_name], seed)

    jobs = [
        (d, name, seed) for d in data for name in names for seed in range(args.seeds)
    ]
    scores = {(d, name): [] for d in data for name in names}
    seconds = dict.fromkeys(names, 0.0)
    for d, name, _, score, fit_seconds in harness.resumable_runs(
        run_one, jobs, args.runs, args.n_jobs
    ):
        scores[d, name].append(score)
        seconds[name] += fit_seconds
    mean = {key: np.mean(values) for key, values in scores.items()}

    reference = f"FactorAnalysis({N_COMPONENTS})"
    rows = [
        [
            f"{d} ({X.shape[0]}x{X.shape[1]})",
            *(f"{mean[d, n]:.2f} ± {np.std(scores[d, n]):.2f}" for n in names),
        ]
        for d, X in data.items()
    ]
    gains = [np.mean([mean[d, n] - mean[d, reference] for d in data]) for n in names]
    rows.append(["mean gain over FA", *(f"{g:+.2f}" for g in gains)])
    rows.append(["fit+score seconds", *(f"{seconds[n]:.0f}" for n in names)])
    lines = [
        harness.command(argv),
        "",
        *harness.header(),
        f"Held-out log-likelihood per row (nats; mean ± sd over {args.seeds} "
        "seeds of a 75/25 split). Last rows: mean gain over "
        f"{reference} per row, and the seconds of all fits of each model.",
        "",
        *harness.table(["data set (n x D)", *names], rows),
    ]
    harness.publish(lines, "likelihood", args.write_docs)


if __name__ == "__main__":
    main()
