"""Held-out log-likelihood of GaussianVAE settings against linear-Gaussian baselines.

Chooses GaussianVAE's defaults by measurement: each setting is fitted on 75 %
of the rows of real data sets (in their raw units) and scored on the other
25 %, over several seeds. Prints a markdown table of mean held-out
log-likelihood per row (nats, in the data's own units, so comparable across
models on one data set but not across data sets), and the mean gain over
FactorAnalysis with the same number of components.

    python benchmarks/likelihood.py [--seeds 3] [--quick] [--output FILE]
"""

import argparse
import itertools
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.decomposition import PCA, FactorAnalysis
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split

from skvae import GaussianVAE

DATA_DIR = Path(
    os.environ.get(
        "SKVAE_DATA_DIR",
        Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "anomaly",
    )
)
N_COMPONENTS = 2


def datasets(quick):
    yield "breast_cancer", load_breast_cancer(return_X_y=True)[0]
    yield "wine", load_wine(return_X_y=True)[0]
    yield "diabetes", load_diabetes(return_X_y=True, scaled=False)[0]
    if quick:
        return
    for path in sorted(DATA_DIR.glob("*.npz")):
        yield path.stem, np.load(path)["X"]


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
    X_train, X_test = train_test_split(X, test_size=0.25, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = make(seed).fit(X_train)
    return model.score(X_test)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)

    models = dict(baselines())
    for name, kwargs in vae_settings(args.quick).items():
        models[f"VAE {name}"] = lambda s, kw=kwargs: GaussianVAE(
            N_COMPONENTS, random_state=s, **kw
        )
    names = list(models)
    rows, seconds = {}, dict.fromkeys(names, 0.0)
    for data_name, X in datasets(args.quick):
        rows[data_name] = {}
        for name in names:
            scores = []
            for seed in range(args.seeds):
                tic = time.perf_counter()
                scores.append(held_out(models[name], X, seed))
                seconds[name] += time.perf_counter() - tic
            rows[data_name][name] = (np.mean(scores), np.std(scores))
        print(f"done {data_name}", file=sys.stderr)

    reference = f"FactorAnalysis({N_COMPONENTS})"
    lines = [
        f"Command: `python benchmarks/likelihood.py {' '.join(argv or sys.argv[1:])}`",
        f"Versions: skvae {sys.modules['skvae'].__version__}, torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}, numpy {np.__version__}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores.",
        "",
        f"Held-out log-likelihood per row (nats; mean ± sd over {args.seeds} "
        "seeds of a 75/25 split). Last row: mean gain over "
        f"{reference} per row.",
        "",
        "| data set (n x D) | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for data_name, X in datasets(args.quick):
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in rows[data_name].values()]
        lines.append(
            f"| {data_name} ({X.shape[0]}x{X.shape[1]}) | " + " | ".join(cells) + " |"
        )
    gains = [
        np.mean([rows[d][n][0] - rows[d][reference][0] for d in rows]) for n in names
    ]
    lines.append(
        "| mean gain over FA | " + " | ".join(f"{g:+.2f}" for g in gains) + " |"
    )
    lines.append(
        "| fit+score seconds | " + " | ".join(f"{seconds[n]:.0f}" for n in names) + " |"
    )
    text = "\n".join(lines)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
