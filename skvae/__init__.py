"""skvae: a scikit-learn variational autoencoder for real-valued, unrestricted data."""

from ._estimator import GaussianVAE

__version__ = "0.1.0"

__all__ = ["GaussianVAE", "__version__"]
