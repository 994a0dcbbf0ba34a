"""The scikit-learn estimator contract, checked by scikit-learn itself."""

from conftest import DEVICE
from sklearn.utils.estimator_checks import parametrize_with_checks

from skvae import GaussianVAE, VAEImputer, VAEOutlierDetector

# Small and fast: the checks fit dozens of times on tiny data.
FAST = dict(
    hidden_layer_sizes=(8,),
    max_iter=5,
    n_importance_samples=8,
    device=DEVICE,
)


@parametrize_with_checks(
    [
        GaussianVAE(**FAST),
        VAEOutlierDetector(**FAST),
        # The detector's default model: linear, one latent dimension per feature.
        VAEOutlierDetector(**{**FAST, "hidden_layer_sizes": ()}),
        VAEImputer(**FAST),
        VAEImputer(**FAST, add_indicator=True),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
