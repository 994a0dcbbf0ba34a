"""skvae: a scikit-learn variational autoencoder for real-valued, unrestricted data."""

from ._estimator import GaussianVAE
from ._imputer import VAEImputer
from ._outlier import VAEOutlierDetector
from ._persistence import load, save
from ._version import __version__

__all__ = [
    "GaussianVAE",
    "VAEImputer",
    "VAEOutlierDetector",
    "load",
    "save",
    "__version__",
]
