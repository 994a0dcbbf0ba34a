import os

import numpy as np
import pytest
import torch
from scipy import stats

from skvae import GaussianVAE
from skvae._model import STD_FLOOR, VAEModule

# SKVAE_TEST_DEVICE=cuda runs the tests on a GPU (the CPU by default).
DEVICE = os.environ.get("SKVAE_TEST_DEVICE", "cpu")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", 'slow: a test of a second or more; deselect with -m "not slow"'
    )


@pytest.fixture(autouse=True)
def _same_torch_rng_for_every_test():
    """Every test starts from the same global torch RNG and leaves it as it was.

    Modules built without a seed (``nn.Linear`` draws its initial weights from
    the global RNG) then get the same weights whichever tests ran before.
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)
        yield


class PPCAData:
    """Rows drawn from a factor-analysis model x = W z + b + noise, z ~ N(0, I)."""

    def __init__(self, n_samples=1500, n_features=5, n_components=2, seed=0):
        rng = np.random.default_rng(seed)
        self.W = rng.normal(size=(n_features, n_components)) * 2.0
        self.b = rng.normal(size=n_features) * 10.0
        self.noise_variance = np.full(n_features, 0.5)
        self.n_components = n_components
        z = rng.normal(size=(n_samples, n_components))
        noise = rng.normal(size=(n_samples, n_features)) * np.sqrt(self.noise_variance)
        X = z @ self.W.T + self.b + noise
        n_train = n_samples * 2 // 3
        self.X_train, self.X_test = X[:n_train], X[n_train:]
        self.covariance = self.W @ self.W.T + np.diag(self.noise_variance)

    def true_log_likelihood(self, X):
        return stats.multivariate_normal(self.b, self.covariance).logpdf(X)


@pytest.fixture(scope="session")
def ppca():
    return PPCAData()


@pytest.fixture(scope="session")
def default_vae(ppca):
    """GaussianVAE's defaults (200 epochs of a 64-64 MLP) fitted on ``ppca``.

    Shared by every test that needs this fit: do not change it (``clone`` or
    ``copy.deepcopy`` it first).
    """
    return GaussianVAE(n_components=2, random_state=0, device=DEVICE).fit(ppca.X_train)


def conditional_means(mean, covariance, X):
    """Closed-form E[x_m | x_o] of N(mean, covariance), row by row."""
    out = X.copy()
    for row in out:
        m = np.isnan(row)
        if m.any():
            o = ~m
            gain = covariance[np.ix_(m, o)] @ np.linalg.inv(covariance[np.ix_(o, o)])
            row[m] = mean[m] + gain @ (row[o] - mean[o])
    return out


def gaussian_log_density(X, rows=slice(None), shrinkage=0.0):
    """log N(x; mean, S) of every row of X, S the covariance of X[rows] with
    its correlations shrunk by ``shrinkage``; by hand, in the units of X, for
    features whose scales are past what scipy's singularity check accepts."""
    mean = X[rows].mean(0)
    covariance = np.cov(X[rows], rowvar=False, bias=True)
    covariance = (1 - shrinkage) * covariance + shrinkage * np.diag(np.diag(covariance))
    centred = X - mean
    mahalanobis = np.einsum(
        "ij,ij->i", centred, np.linalg.solve(covariance, centred.T).T
    )
    return -0.5 * (mahalanobis + np.linalg.slogdet(2 * np.pi * covariance)[1])


def remove_at_random(X, fraction, seed):
    """A copy of X with about ``fraction`` of its entries set to NaN (MCAR)."""
    X = X.copy()
    X[np.random.default_rng(seed).random(X.shape) < fraction] = np.nan
    return X


# Dimensions and noise variance of the exact linear VAE below.
N_FEATURES, N_COMPONENTS, NOISE = 4, 2, 0.3


def exact_linear_gaussian_vae():
    """A linear VAE whose encoder is the exact posterior of its decoder.

    With orthogonal decoder columns the posterior covariance is diagonal, so
    the encoder can represent it exactly; then every importance weight equals
    p(x), whatever the draw. The module is float64, on ``DEVICE``.
    """
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(N_FEATURES, N_COMPONENTS)))
    W = q * np.array([2.0, 0.5])
    b = rng.normal(size=N_FEATURES)
    M = W.T @ W + NOISE * np.eye(N_COMPONENTS)
    A = np.linalg.solve(M, W.T)
    post_std = np.sqrt(NOISE / np.diag(M))
    module = VAEModule(N_FEATURES, N_COMPONENTS, (), "identity", NOISE, 1e-6).double()
    with torch.no_grad():
        module.variance.fill_(NOISE)  # built in float32; exact in float64
        module.encoder_head.weight.copy_(torch.tensor(np.vstack([A, np.zeros_like(A)])))
        raw_std = np.log(np.expm1(post_std - STD_FLOOR))  # inverse softplus
        module.encoder_head.bias.copy_(torch.tensor(np.concatenate([-A @ b, raw_std])))
        module.decoder_mean.weight.copy_(torch.tensor(W))
        module.decoder_mean.bias.copy_(torch.tensor(b))
    marginal = stats.multivariate_normal(b, W @ W.T + NOISE * np.eye(N_FEATURES))
    return module.to(DEVICE), marginal


# GaussianVAE's defaults before issue 14: a randomly initialized ReLU network
# trained on the training loss at a constant rate. Tests of the training
# mechanics use them.
RANDOM_START = dict(
    init="random",
    activation="relu",
    learning_rate="constant",
    prior_components=1,
    standardize=True,
    early_stopping=False,
    min_variance=1e-4,
)


def two_factor_manifold(n_samples, seed):
    """Two latent variables through a steep nonlinear map into 12 features."""
    params = np.random.default_rng(0)
    A = params.normal(0, 3 / np.sqrt(8), (12, 8))
    B, c = params.normal(0, 2, (8, 2)), params.normal(0, 0.5, 8)
    C = params.normal(0, 0.5, (12, 2))
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_samples, 2))
    X = np.tanh(z @ B.T + c) @ A.T + z @ C.T
    return X + 0.15 * rng.normal(size=X.shape)
