"""skvae: a scikit-learn variational autoencoder for real-valued, unrestricted data."""

from ._estimator import GaussianVAE
from ._imputer import VAEImputer

__version__ = "0.1.0"

__all__ = ["GaussianVAE", "VAEImputer", "__version__"]
