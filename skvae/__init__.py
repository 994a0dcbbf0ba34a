"""skvae: a scikit-learn variational autoencoder for real-valued, unrestricted data."""

from ._estimator import GaussianVAE
from ._outlier import VAEOutlierDetector

__version__ = "0.1.0"

__all__ = ["GaussianVAE", "VAEOutlierDetector", "__version__"]
