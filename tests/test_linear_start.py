"""The closed-form start: probabilistic PCA, the mixture prior, and the module at it."""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy import stats
from sklearn.covariance import ledoit_wolf
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture

from skvae._likelihood import log_mean_exp
from skvae._linear_start import (
    mixture_prior,
    probabilistic_pca,
    resolution_variance,
    shrunk_covariance,
    start_log_likelihood,
)
from skvae._model import VAEModule


def correlated(n_samples=600, n_features=5, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_features, n_features))
    return rng.normal(size=(n_samples, n_features)) @ mixing + rng.normal(
        size=n_features
    )


@pytest.mark.parametrize("n_components", [1, 3])
def test_start_is_scikit_learns_probabilistic_pca(n_components):
    """W W^T + sigma^2 I is sklearn's PCA covariance, as a maximum-likelihood fit.

    scikit-learn divides the covariance by n - 1; the maximum-likelihood
    solution of Tipping and Bishop by n.
    """
    Z = correlated()
    n = Z.shape[0]
    start = probabilistic_pca(Z, n_components, min_variance=1e-8)
    covariance = PCA(n_components).fit(Z).get_covariance() * (n - 1) / n
    W = start.decoder_weight
    model = W @ W.T + np.diag(start.noise_variance)
    assert_allclose(model, covariance, rtol=1e-8, atol=1e-10)
    expected = stats.multivariate_normal(Z.mean(0), covariance).logpdf(Z)
    assert_allclose(start_log_likelihood(start, Z), expected, rtol=1e-8)


def test_full_start_is_the_maximum_likelihood_gaussian():
    Z = correlated()
    start = probabilistic_pca(Z, Z.shape[1], min_variance=1e-8)
    gaussian = GaussianMixture(1, reg_covar=0.0).fit(Z)
    assert_allclose(
        start_log_likelihood(start, Z), gaussian.score_samples(Z), rtol=1e-8
    )
    assert start.noise_variance[0] < np.linalg.eigvalsh(np.cov(Z.T)).min()


@pytest.mark.parametrize("shrinkage", [0.0, 0.3, 1.0])
def test_shrinkage_keeps_the_variances_and_scales_the_correlations(shrinkage):
    Z = correlated()
    covariance = np.cov(Z, rowvar=False, bias=True)
    shrunk = shrunk_covariance(Z, shrinkage)
    assert_allclose(np.diag(shrunk), np.diag(covariance), rtol=1e-12)
    spread = np.sqrt(np.diag(covariance))
    correlation = covariance / np.outer(spread, spread)
    off = ~np.eye(Z.shape[1], dtype=bool)
    assert_allclose(
        (shrunk / np.outer(spread, spread))[off],
        (1 - shrinkage) * correlation[off],
        atol=1e-12,
    )
    # The full start is then the Gaussian with that covariance.
    start = probabilistic_pca(Z, Z.shape[1], 1e-8, shrinkage)
    expected = stats.multivariate_normal(Z.mean(0), shrunk).logpdf(Z)
    assert_allclose(start_log_likelihood(start, Z), expected, rtol=1e-8)


def test_resolution_variance_is_a_rounding_error_on_the_grid():
    Z = np.array(
        [
            [0.0, 2.0, 0.0, 1e-3],
            [1.0, 2.0, 0.25, 2e-3],
            [1.0, 2.0, np.nan, 4e-3],
            [3.0, 2.0, 1.0, 8e-3],
        ]
    )
    # Smallest gaps 1 (not 2), none (constant), 0.25 (NaN ignored), 1e-3.
    expected = np.array([1.0, 0.0, 0.0625, 1e-6]) / 12
    assert_allclose(resolution_variance(Z), expected, rtol=1e-12)


def test_variance_floor_raises_only_the_diagonal_below_it():
    # The full start is the Gaussian whose covariance is the sample one with
    # its diagonal floored: a constant feature gets the floor, the others
    # (variances far above it) and every covariance are unchanged.
    Z = correlated(n_features=3)
    Z = np.column_stack([Z, np.full(len(Z), 2.0)])
    floor = np.array([0.5, 0.5, 0.5, 0.3])
    start = probabilistic_pca(Z, 4, 1e-8, variance_floor=floor)
    W = start.decoder_weight
    model = W @ W.T + np.diag(start.noise_variance)
    expected = np.cov(Z, rowvar=False, bias=True)
    assert np.diag(expected)[:3].min() > 0.5
    expected[3, 3] = 0.3
    assert_allclose(model, expected, rtol=1e-8, atol=1e-10)


def test_auto_shrinkage_is_ledoit_wolf_on_the_correlations():
    # Ledoit-Wolf shrinks toward trace/p times the identity, which for rows
    # scaled to unit variance is their diagonal: the same estimator.
    Z = correlated(n_samples=40, n_features=8)
    spread = Z.std(0)
    expected = ledoit_wolf(Z / spread)[0] * np.outer(spread, spread)
    assert_allclose(shrunk_covariance(Z, "auto"), expected, rtol=1e-10)


@pytest.mark.parametrize("n_components", [2, 5])
def test_module_at_the_start_has_the_exact_posterior(n_components):
    """Every importance weight equals p(x): the encoder is the exact posterior."""
    Z = correlated()
    start = probabilistic_pca(Z, n_components, min_variance=1e-8)
    module = VAEModule(5, n_components, (8,), "relu", "shared", 1e-8, linear_path=True)
    module.initialize_linear(start)
    module = module.double()
    module.variance.copy_(torch.tensor(start.noise_variance))
    eps = torch.tensor(np.random.default_rng(1).normal(size=(16, n_components)))
    log_w = module.importance_log_weights(torch.tensor(Z[:50]), eps).detach().numpy()
    exact = start_log_likelihood(start, Z[:50])
    # float32 parameters: the weights agree with p(x) to float32 precision.
    assert_allclose(log_w, np.repeat(exact[:, None], 16, 1), rtol=1e-4, atol=1e-4)


def clusters(n_samples=900, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0.0, 1.0], [4.0, 1.0, -1.0]])
    labels = rng.integers(0, 2, n_samples)
    return centres[labels] + rng.normal(size=(n_samples, 3)) * [1.0, 0.5, 0.3]


def test_mixture_prior_follows_clustered_data():
    Z = clusters()
    start = mixture_prior(
        probabilistic_pca(Z, 3, 1e-8), Z, "auto", random_state=0, min_variance=1e-8
    )
    assert start.prior_components == 2
    gmm = GaussianMixture(2, random_state=0).fit(Z)
    # The start in data space is the mixture fitted to the codes, mapped back:
    # up to EM's local optimum, the mixture fitted to Z itself.
    assert abs(start_log_likelihood(start, Z).mean() - gmm.score(Z)) < 0.01
    one = start_log_likelihood(probabilistic_pca(Z, 3, 1e-8), Z).mean()
    assert start_log_likelihood(start, Z).mean() > one + 0.3


def test_gaussian_data_keep_the_standard_normal_prior():
    Z = correlated(n_samples=2000)
    start = mixture_prior(probabilistic_pca(Z, 5, 1e-8), Z, "auto", 0, 1e-8)
    assert start.prior_components == 1 and start.prior_weights is None


def test_module_at_a_mixture_start_scores_the_mixture():
    Z = clusters()
    start = mixture_prior(probabilistic_pca(Z, 3, 1e-8), Z, "auto", 0, 1e-8)
    module = VAEModule(3, 3, (8,), "relu", "feature", 1e-8, True, True, 2)
    module.initialize_linear(start)
    module = module.double()
    module.variance.copy_(torch.tensor(start.noise_variance))
    eps = torch.special.ndtri(
        torch.quasirandom.SobolEngine(3, scramble=True, seed=0)
        .draw(1024, dtype=torch.float64)
        .clamp(1e-12, 1 - 1e-12)
    )
    x = torch.tensor(Z[:100])
    estimate = log_mean_exp(module.importance_log_weights(x, eps), 1).detach()
    error = estimate.numpy() - start_log_likelihood(start, Z[:100])
    # The encoder is the posterior of one Gaussian, not of the mixture: close
    # for rows inside a cluster, looser between them.
    assert abs(error.mean()) < 0.01 and np.abs(error).max() < 0.2
