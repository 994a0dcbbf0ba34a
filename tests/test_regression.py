"""Outputs of fixed fits pinned to the values of the release they were recorded with.

Refactoring must not change what a fitted model computes. Each case fits a
small model on the CPU with a fixed seed and compares ``score_samples``,
``transform`` and ``inverse_transform`` (``transform`` of the imputer, the
threshold and support of the detector) with ``data/regression.npz``.

Regenerate that file only for a change meant to alter results, and say so in
the commit: ``python tests/test_regression.py [CASE ...]``, where a case is
a name of ``CASES`` or ``name/nan`` or ``name/complete`` (all by default).
"""

from pathlib import Path

import numpy as np
import pytest
from conftest import RANDOM_START
from numpy.testing import assert_allclose, assert_array_equal

from skvae import GaussianVAE, VAEImputer, VAEOutlierDetector

REFERENCE = Path(__file__).parent / "data" / "regression.npz"
# Training runs in float32 on as many threads as torch picks, whose sums
# may be ordered differently: close, not bit-equal.
RTOL, ATOL = 1e-4, 1e-4


def _data(missing):
    rng = np.random.default_rng(42)
    z = rng.normal(size=(240, 2))
    X = np.tanh(z @ rng.normal(size=(2, 5))) * [1.0, 10.0, 100.0, 0.1, 3.0]
    X += 0.1 * rng.normal(size=X.shape) + [0.0, -5.0, 1e3, 0.0, 7.0]
    if missing:
        X[rng.random(X.shape) < 0.15] = np.nan
    return X


CASES = {
    "vae": (
        GaussianVAE,
        {"n_components": 2, "hidden_layer_sizes": (16,), **RANDOM_START},
    ),
    "vae_linear": (
        GaussianVAE,
        {"n_components": None, "hidden_layer_sizes": (), **RANDOM_START},
    ),
    "vae_shared": (
        GaussianVAE,
        {"n_components": 2, "decoder_variance": "shared", **RANDOM_START},
    ),
    # Today's defaults: the start chosen on held-out rows (Gaussianized
    # features or not, a mixture prior), the network candidate against it;
    # the closed-form detector and imputer.
    "vae_default": (GaussianVAE, {}),
    "detector_default": (VAEOutlierDetector, {}),
    "imputer_default": (VAEImputer, {}),
    # The detector's defaults before it was fitted in closed form.
    "detector": (VAEOutlierDetector, {"init": "random", "shrinkage": 0.0}),
    # The imputer's defaults before it was fitted in closed form.
    "imputer": (
        VAEImputer,
        {
            "n_components": 2,
            "hidden_layer_sizes": (16,),
            "init": "random",
            "shrinkage": 0.0,
        },
    ),
}


def _outputs(name, missing):
    cls, params = CASES[name]
    X = _data(missing)
    model = cls(max_iter=15, device="cpu", random_state=0, **params).fit(X)
    out = {"score_samples": model.score_samples(X)}
    if isinstance(model, GaussianVAE):
        Z = model.transform(X)
        out["transform"] = Z
        out["inverse_transform"] = model.inverse_transform(Z)
    if isinstance(model, VAEImputer):
        out["transform"] = model.transform(X)
    if isinstance(model, VAEOutlierDetector):
        out["offset"] = np.array([model.offset_])
        out["support"] = model.support_
    return out


def _keys():
    return [
        (name, missing)
        for name in CASES
        for missing in (False, True)
        if not (name.startswith("imputer") and not missing)
    ]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(("name", "missing"), _keys())
def test_outputs_match_the_recorded_release(name, missing):
    reference = np.load(REFERENCE)
    prefix = f"{name}/{'nan' if missing else 'complete'}/"
    outputs = _outputs(name, missing)
    assert {prefix + k for k in outputs} <= set(reference.files)
    for key, value in outputs.items():
        expected = reference[prefix + key]
        if value.dtype == bool:
            assert_array_equal(value, expected, err_msg=prefix + key)
        else:
            assert_allclose(value, expected, rtol=RTOL, atol=ATOL, err_msg=prefix + key)


if __name__ == "__main__":
    import sys

    # Cases to record again, as "name" or "name/nan" or "name/complete"
    # (all if none given); the others keep their recorded values.
    wanted = sys.argv[1:]
    arrays = dict(np.load(REFERENCE)) if wanted else {}
    for name, missing in _keys():
        prefix = f"{name}/{'nan' if missing else 'complete'}/"
        if wanted and name not in wanted and prefix[:-1] not in wanted:
            continue
        arrays.update({prefix + k: v for k, v in _outputs(name, missing).items()})
        print(f"recorded {prefix[:-1]}")
    np.savez_compressed(REFERENCE, **arrays)
    print(f"wrote {len(arrays)} arrays to {REFERENCE}")
