"""``python -m skvae demo``: GaussianVAE on raw data shipped with scikit-learn."""

import argparse
import sys
import time
import warnings

import numpy as np


def demo(n_components: int = 5, random_state: int = 0) -> None:
    """Fit on the breast-cancer data in its raw units and compare log-likelihoods."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.decomposition import PCA, FactorAnalysis
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture
    from sklearn.model_selection import train_test_split

    from skvae import GaussianVAE

    data = load_breast_cancer()
    X, y, names = data.data, data.target, data.feature_names
    X_train, X_test = train_test_split(X, test_size=0.25, random_state=random_state)
    spread = X.std(axis=0)
    print(
        f"Breast-cancer data: {X.shape[0]} rows x {X.shape[1]} features in raw units "
        f"(feature standard deviations from {spread.min():.2g} to {spread.max():.2g}).\n"
        f"Fit on {len(X_train)} rows; held-out log-likelihood per row on "
        f"{len(X_test)} rows, in nats (higher is better):\n"
    )
    models = {
        f"GaussianVAE(n_components={n_components})": GaussianVAE(
            n_components=n_components, random_state=random_state
        ),
        f"FactorAnalysis(n_components={n_components})": FactorAnalysis(
            n_components=n_components, random_state=random_state
        ),
        f"PCA(n_components={n_components})": PCA(n_components=n_components),
        "GaussianMixture(n_components=1)": GaussianMixture(
            n_components=1, random_state=random_state
        ),
    }
    for label, model in models.items():
        tic = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_train)
        seconds = time.perf_counter() - tic
        print(f"  {label:<38} {model.score(X_test):9.2f}   (fit {seconds:.1f} s)")

    vae = models[f"GaussianVAE(n_components={n_components})"]
    print(
        f"\nPer-dimension KL of the latent code (nats): {vae.kl_per_component_.round(2)}"
    )
    scores = vae.score_samples(X)
    worst = np.argsort(scores)[:5]
    print(
        "\nThe five most anomalous rows of the whole data set (lowest log-likelihood):"
    )
    for row in worst:
        deviation = np.abs((X[row] - vae.mean_) / vae.scale_)
        feature = names[np.argmax(deviation)]
        print(
            f"  row {row:3d}: log-likelihood {scores[row]:9.2f}, "
            f"diagnosis {data.target_names[y[row]]:<9}, "
            f"most extreme feature '{feature}' ({deviation.max():.1f} sd)"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skvae", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="fit GaussianVAE on real data")
    demo_parser.add_argument("--n-components", type=int, default=5)
    demo_parser.add_argument("--random-state", type=int, default=0)
    args = parser.parse_args(argv)
    demo(args.n_components, args.random_state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
