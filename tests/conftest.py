import numpy as np
import pytest
from scipy import stats


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
