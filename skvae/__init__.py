"""skvae: a scikit-learn variational autoencoder for real-valued, unrestricted data."""

from ._estimator import GaussianVAE
from ._imputer import VAEImputer
from ._outlier import VAEOutlierDetector
from ._persistence import load

__version__ = "0.1.0"

__all__ = ["GaussianVAE", "VAEImputer", "VAEOutlierDetector", "load", "__version__"]
