"""``python -m skvae demo``: GaussianVAE on raw data shipped with scikit-learn."""

import argparse
import sys
import time
import warnings

import numpy as np


def _tuned_peers(random_state):
    """scikit-learn's density models, each tuned on the training rows only.

    Each is fitted on standardized data; :func:`demo` adds the log-Jacobian
    of the standardization, so that every score is in the data's units.
    """
    from sklearn.decomposition import FactorAnalysis
    from sklearn.mixture import GaussianMixture
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KernelDensity

    def mixture_by_bic(Z):
        fits = [
            GaussianMixture(k, random_state=random_state).fit(Z) for k in range(1, 9)
        ]
        return min(fits, key=lambda m: m.bic(Z))

    def search(model, grid):
        return lambda Z: GridSearchCV(model, grid, cv=3).fit(Z).best_estimator_

    return {
        "Gaussian (full covariance)": lambda Z: GaussianMixture(
            1, random_state=random_state
        ).fit(Z),
        "GaussianMixture (BIC, 1-8)": mixture_by_bic,
        "KernelDensity (CV bandwidth)": search(
            KernelDensity(), {"bandwidth": np.logspace(-1.5, 0.5, 12)}
        ),
        "FactorAnalysis (CV components)": search(
            FactorAnalysis(random_state=random_state),
            {"n_components": [2, 5, 10, 20, 30]},
        ),
    }


def demo(random_state: int = 0) -> None:
    """Fit on the breast-cancer data in its raw units and compare log-likelihoods."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.exceptions import ConvergenceWarning
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
    mean, scale = X_train.mean(0), X_train.std(0)
    log_jacobian = np.log(scale).sum()
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        tic = time.perf_counter()
        vae = GaussianVAE(random_state=random_state).fit(X_train)
        results["GaussianVAE() (defaults)"] = (
            vae.score(X_test),
            time.perf_counter() - tic,
        )
        for label, fit in _tuned_peers(random_state).items():
            tic = time.perf_counter()
            model = fit((X_train - mean) / scale)
            score = model.score_samples((X_test - mean) / scale).mean()
            results[label] = (score - log_jacobian, time.perf_counter() - tic)
    for label, (score, seconds) in sorted(results.items(), key=lambda r: -r[1][0]):
        print(f"  {label:<34} {score:9.2f}   (fit {seconds:.1f} s)")

    gaussianized = vae.marginal_knots_ is not None
    k = vae.module_.prior_components
    components = f"{k} component{'s' if k > 1 else ''}"
    if vae.module_.has_linear_decoder:
        # Training did not beat the closed-form start, which was kept.
        model = (
            f"its closed-form start (training did not beat it in {vae.n_iter_} "
            f"epochs): a Gaussian mixture of {components}"
        )
        if k > 1:
            model += ", an average of EM fits"
    else:
        model = f"a network trained {vae.n_iter_} epochs, its prior of {components}"
    print(
        f"\nGaussianVAE chose: features {'Gaussianized' if gaussianized else 'standardized'}, "
        f"{model}."
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
    demo_parser.add_argument("--random-state", type=int, default=0)
    args = parser.parse_args(argv)
    demo(args.random_state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
