import contextlib
import copy
import pickle
import re
import warnings
from concurrent.futures import ThreadPoolExecutor

import joblib
import numpy as np
import pytest
import torch
from conftest import DEVICE, RANDOM_START, remove_at_random, two_factor_manifold
from numpy.testing import assert_allclose, assert_array_equal
from scipy import special, stats
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import InvalidParameterError

from skvae import GaussianVAE, VAEImputer, _base, _training
from skvae._device import resolve_device
from skvae._training import fit_module, make_optimizer

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SMALL = dict(
    hidden_layer_sizes=(16,), max_iter=30, random_state=0, device=DEVICE, **RANDOM_START
)


@pytest.fixture(scope="module")
def fitted(ppca):
    return GaussianVAE(n_components=2, **SMALL).fit(ppca.X_train)


@pytest.fixture(scope="module")
def fitted_300(ppca):
    """The SMALL fit on the first 300 training rows, which several tests compare."""
    return GaussianVAE(n_components=2, **SMALL).fit(ppca.X_train[:300])


# ----------------------------------------------------------------- known answers


@pytest.mark.slow
def test_linear_vae_recovers_the_factor_analysis_likelihood(ppca):
    """On data from the model class, held-out score is the true log-likelihood."""
    vae = GaussianVAE(
        n_components=2, hidden_layer_sizes=(), random_state=0, device=DEVICE
    ).fit(ppca.X_train)
    true = ppca.true_log_likelihood(ppca.X_test).mean()
    pca = PCA(n_components=2).fit(ppca.X_train).score(ppca.X_test)
    assert abs(vae.score(ppca.X_test) - true) < 0.1
    assert abs(vae.score(ppca.X_test) - pca) < 0.1
    # Per feature, noise and loadings trade off under a diagonal posterior.
    assert_allclose(vae.noise_variance_.mean(), ppca.noise_variance.mean(), rtol=0.2)


@pytest.mark.slow
def test_nonlinear_default_is_close_to_the_true_likelihood(default_vae, ppca):
    true = ppca.true_log_likelihood(ppca.X_test).mean()
    assert abs(default_vae.score(ppca.X_test) - true) < 0.15


def test_linear_model_scores_its_exact_gaussian_density(ppca):
    """Without hidden layers p(x) is N(b, W W^T + diag(var)): scored exactly.

    Also for a trained model whose encoder is not the exact posterior, where
    importance draws would only give a bound; their number plays no part.
    """
    vae = GaussianVAE(
        n_components=2,
        hidden_layer_sizes=(),
        max_iter=5,
        random_state=0,
        device=DEVICE,
        **RANDOM_START,
    ).fit(ppca.X_train[:300])
    module = vae.module_
    W = module.decoder_mean.weight.detach().double().cpu().numpy()
    b = module.decoder_mean.bias.detach().double().cpu().numpy()
    variance = module.variance.double().cpu().numpy()
    scale = np.diag(vae.scale_)
    covariance = scale @ (W @ W.T + np.diag(variance)) @ scale
    expected = stats.multivariate_normal(vae.mean_ + vae.scale_ * b, covariance)
    X = ppca.X_test[:50]
    assert_allclose(vae.score_samples(X), expected.logpdf(X), rtol=1e-6)
    one_draw = copy.deepcopy(vae).set_params(n_importance_samples=1)
    assert_allclose(one_draw.score_samples(X), vae.score_samples(X), rtol=1e-12)


@pytest.mark.parametrize("shrinkage", [0.0, 0.5, "auto"])
def test_closed_form_fit_is_the_shrunk_gaussian(ppca, shrinkage):
    from skvae._linear_start import shrunk_covariance

    X = ppca.X_train[:200]
    vae = GaussianVAE(
        hidden_layer_sizes=(),
        init="linear",
        shrinkage=shrinkage,
        random_state=0,
        device=DEVICE,
    ).fit(X)
    assert vae.n_iter_ == 0 and vae.loss_curve_ == []
    # Computed on the standardized rows, then back in the units of X.
    spread = X.std(0)
    covariance = shrunk_covariance(X / spread, shrinkage) * np.outer(spread, spread)
    expected = stats.multivariate_normal(X.mean(0), covariance).logpdf(ppca.X_test)
    assert_allclose(vae.score_samples(ppca.X_test), expected, rtol=1e-6)


@pytest.mark.parametrize("estimator", ["GaussianVAE", "VAEImputer", "detector"])
def test_a_first_partial_fit_is_the_fit_in_closed_form(ppca, estimator):
    # As one IncrementalPCA.partial_fit is its fit: an epoch on the rows the
    # closed form was fitted to moved the model off it (imputation RMSE
    # 1.243 to 1.260). Later chunks train it, an epoch each.
    from skvae import VAEImputer, VAEOutlierDetector

    X = ppca.X_train[:300].copy()
    X[::5, 2] = np.nan
    params = dict(random_state=0, device=DEVICE)
    make = {
        "GaussianVAE": lambda: GaussianVAE(
            hidden_layer_sizes=(), init="linear", **params
        ),
        "VAEImputer": lambda: VAEImputer(**params),
        # All rows, as a first chunk trains on all its rows.
        "detector": lambda: VAEOutlierDetector(support_fraction=1.0, **params),
    }[estimator]
    fitted, chunked = make().fit(X), make().partial_fit(X)
    assert chunked.n_iter_ == 0 and chunked.loss_curve_ == []
    X_test = ppca.X_test.copy()
    X_test[::3, 0] = np.nan
    assert_array_equal(chunked.score_samples(X_test), fitted.score_samples(X_test))
    chunked.partial_fit(ppca.X_test)
    assert chunked.n_iter_ == 1 and len(chunked.loss_curve_) == 1


def test_alpha_leaves_a_fit_in_closed_form_alone(ppca):
    # A Gaussian fitted in closed form trains no weight for the prior to act
    # on: the same model whatever alpha, as the docstring says.
    X = ppca.X_train[:200]
    params = dict(hidden_layer_sizes=(), init="linear", random_state=0, device=DEVICE)
    plain = GaussianVAE(**params).fit(X)
    penalized = GaussianVAE(alpha=1e3, **params).fit(X)
    assert penalized.n_iter_ == 0
    assert_allclose(
        penalized.score_samples(ppca.X_test), plain.score_samples(ppca.X_test)
    )


def test_default_floor_follows_a_feature_fixed_by_others():
    # A third feature that is a linear combination of two others, rounded to
    # two decimals as the others: the smallest eigenvalue of the standardized
    # covariance is 3.7e-7, the rounding error's share. The
    # default min_variance must not bind the closed-form start there, so the
    # fit is the Gaussian's; a floor of 1e-6 cost these rows 0.19 nats each
    # on average (0.60 at most).
    rng = np.random.default_rng(0)
    parts = rng.normal([20.0, -3.0], [3.0, 2.0], size=(600, 2)).round(2)
    X = np.column_stack([parts, (parts @ [0.7, 1.3]).round(2), rng.normal(size=600)])
    train, test = X[:400], X[400:]
    vae = GaussianVAE(
        hidden_layer_sizes=(),
        prior_components=1,
        init="linear",
        shrinkage=0.0,
        standardize=True,
        random_state=0,
        device=DEVICE,
    ).fit(train)
    expected = stats.multivariate_normal(train.mean(0), np.cov(train.T, bias=True))
    # The parameters are stored in float32, which limits how closely the
    # narrow direction is followed: 2e-4 nats here.
    assert_allclose(vae.score_samples(test), expected.logpdf(test), atol=1e-3)


def test_shrinkage_has_no_effect_on_a_random_start(ppca):
    X = ppca.X_train[:200]
    params = dict(n_components=2, max_iter=3, random_state=0, device=DEVICE)
    params.update(RANDOM_START)
    scores = [
        GaussianVAE(shrinkage=s, **params).fit(X).score_samples(X) for s in (0.0, 0.7)
    ]
    assert_array_equal(*scores)


def test_shared_variance_is_probabilistic_pca():
    """Features of equal variance keep PPCA's isotropic noise after standardizing."""
    rng = np.random.default_rng(0)
    W = np.kron(np.ones((2, 1)), np.eye(2)) * 2.0  # rows of equal norm
    X = rng.normal(size=(1500, 2)) @ W.T + rng.normal(size=(1500, 4)) * np.sqrt(0.5)
    X_train, X_test = X[:1000] * 7.0 + 100.0, X[1000:] * 7.0 + 100.0
    vae = GaussianVAE(
        n_components=2,
        hidden_layer_sizes=(),
        decoder_variance="shared",
        random_state=0,
        device=DEVICE,
    ).fit(X_train)
    pca = PCA(n_components=2).fit(X_train)
    assert_allclose(vae.noise_variance_, pca.noise_variance_, rtol=0.15)
    assert abs(vae.score(X_test) - pca.score(X_test)) < 0.1


def test_shared_variance_is_one_variance_in_standardized_units():
    # Two factors in six features, noise of standard deviation 0.2 on every
    # other feature and 1 on the rest: "feature" learns a variance for each,
    # as factor analysis does, "shared" one for all, in the standardized
    # units it trains in, and fits worse.
    rng = np.random.default_rng(0)
    W = np.array([[2.0, 1, 2, 1, 2, 1], [1, 2, -1, 2, -1, -2]])
    X = rng.normal(size=(1000, 2)) @ W
    X += rng.normal(size=(1000, 6)) * np.array([0.2, 1.0] * 3)
    params = {**SMALL, "n_components": 2, "hidden_layer_sizes": (), "max_iter": 100}
    fits = {
        mode: GaussianVAE(decoder_variance=mode, **params).fit(X)
        for mode in ("shared", "feature")
    }
    shared = fits["shared"].noise_variance_ / fits["shared"].scale_ ** 2
    assert_allclose(shared, shared[0], rtol=1e-6)
    feature = fits["feature"].noise_variance_ / fits["feature"].scale_ ** 2
    assert feature[1::2].min() > 4 * feature[::2].max()
    assert fits["feature"].score(X) > fits["shared"].score(X) + 0.5


def test_unused_latent_dimensions_collapse_to_the_prior(ppca):
    vae = GaussianVAE(
        n_components=4,
        hidden_layer_sizes=(),
        random_state=0,
        device=DEVICE,
        **RANDOM_START,
    ).fit(ppca.X_train)
    kl = vae.kl_per_component_
    # The two real factors are used; at least one spare dimension collapses
    # (a second spare one can linger on a plateau).
    assert (kl > 0.5).sum() >= 2 and (kl < 0.05).sum() >= 1


def test_kl_per_component_under_a_mixture_prior_is_to_its_moments(ppca):
    # Under a mixture prior, kl_per_component_ is the closed-form KL of each
    # q(z_j|x) to the 1-D Gaussian with the prior's mean and variance in
    # dimension j (law of total variance over the components), averaged over
    # the training rows (all of them: no early stopping in SMALL). After 10
    # epochs the prior has mean (-0.64, -0.22): measured relative error
    # 1.6e-8; the KL to N(0, 1) instead is 1.7 times off.
    X = ppca.X_train[:300]
    vae = GaussianVAE(
        n_components=2, **{**SMALL, "prior_components": 3, "max_iter": 10}
    ).fit(X)
    module = vae.module_
    assert module.prior_components == 3
    with torch.no_grad():
        x = torch.tensor((X - vae.mean_) / vae.scale_, dtype=torch.float32)
        mean, std = (t.double().cpu().numpy() for t in module.encode(x.to(DEVICE)))
        log_weights, means, cholesky = (
            t.double().cpu().numpy() for t in module.prior_mixture()
        )
    weights = np.exp(log_weights)
    prior_mean = weights @ means
    prior_var = weights @ ((cholesky**2).sum(-1) + means**2) - prior_mean**2
    kl = (
        np.log(np.sqrt(prior_var) / std)
        + (std**2 + (mean - prior_mean) ** 2) / (2 * prior_var)
        - 0.5
    )
    assert_allclose(vae.kl_per_component_, kl.mean(0), rtol=1e-6)


def test_importance_sampling_tightens_the_elbo(fitted, ppca):
    elbo_like = clone(fitted).set_params(n_importance_samples=1)
    elbo_like.__dict__.update(
        {k: v for k, v in fitted.__dict__.items() if k.endswith("_")}
    )
    elbo_like._score_seed = fitted._score_seed
    assert fitted.score(ppca.X_test) > elbo_like.score(ppca.X_test)


def test_importance_bound_tightens_with_the_number_of_draws(ppca):
    """IWAE-k is non-decreasing in k and approaches the true PPCA likelihood."""
    # The margins below need an encoder whose ELBO is loose by more than
    # 0.1 nats/row. Trained on the CPU, SMALL gives one; on a GPU, the same
    # seed draws other batches and noise and can give a tighter one.
    fitted = GaussianVAE(n_components=2, **{**SMALL, "device": "cpu"})
    fitted.fit(ppca.X_train)
    truth = ppca.true_log_likelihood(ppca.X_test).mean()
    scores = []
    for k in (1, 4, 16, 64, 512):
        model = copy.deepcopy(fitted).set_params(n_importance_samples=k)
        scores.append(model.score(ppca.X_test))
    # The bound rises with k in expectation; each k's quasi-random draws are
    # shared by every row, so its estimate errs by a few hundredths.
    assert all(b > a - 0.03 for a, b in zip(scores, scores[1:], strict=False))
    assert scores[-1] - scores[0] > 0.1
    assert abs(truth - scores[-1]) < 0.1 < abs(truth - scores[0])


# ------------------------------------------------------------------ invariances


@pytest.mark.parametrize("c, b", [(4.0, 0.0), (2.0**-10, 0.0), (8.0, -3e5)])
def test_scale_and_shift_equivariance(fitted_300, ppca, c, b):
    X, vae = ppca.X_train[:300], fitted_300
    scaled = GaussianVAE(n_components=2, **SMALL).fit(c * X + b)
    exact = b == 0
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-4, atol=1e-4)
    assert_allclose(scaled.transform(c * X + b), vae.transform(X), **tol)
    shift = -X.shape[1] * np.log(c)
    assert_allclose(
        scaled.score_samples(c * X + b), vae.score_samples(X) + shift, rtol=1e-6
    )
    assert_allclose(scaled.noise_variance_, vae.noise_variance_ * c**2, rtol=1e-5)
    assert_allclose(
        scaled.inverse_transform(vae.transform(X)),
        c * vae.inverse_transform(vae.transform(X)) + b,
        rtol=1e-5,
        atol=1e-6 * c,
    )


def test_score_samples_is_batch_invariant_and_deterministic(fitted, ppca):
    X = ppca.X_test[:20]
    together = fitted.score_samples(X)
    one_by_one = np.concatenate([fitted.score_samples(X[i : i + 1]) for i in range(20)])
    assert_allclose(one_by_one, together, rtol=1e-12)
    assert_array_equal(fitted.score_samples(X), together)
    assert fitted.score(X) == pytest.approx(together.mean(), rel=1e-12)


def test_transform_is_the_posterior_mean(fitted, ppca):
    X = ppca.X_test[:10]
    Z = fitted.transform(X)
    assert Z.dtype == np.float64 and Z.shape == (10, 2)
    assert_array_equal(fitted.transform(X), Z)
    x = torch.tensor((X - fitted.mean_) / fitted.scale_, dtype=torch.float32)
    with torch.no_grad():
        mean, _ = fitted.module_.encode(x.to(fitted.device_))
    assert_allclose(Z, mean.cpu().numpy(), rtol=1e-5, atol=1e-5)


def linear_posterior_means(vae, X):
    """E[z | x_o] of a fitted linear-decoder model with an N(0, I) prior, row by row.

    z | x_o is Gaussian with precision ``I + A_o^T Psi_o^-1 A_o`` and mean
    that matrix's inverse times ``A_o^T Psi_o^-1 (x_o - c_o)``, in the
    standardized units the model lives in.
    """
    with torch.no_grad():
        A, c = (t.double().cpu().numpy() for t in vae.module_.linear_decoder())
        psi = vae.module_.variance.double().cpu().numpy()
    out = np.zeros((X.shape[0], A.shape[1]))
    for row, x in zip(out, (X - vae.mean_) / vae.scale_, strict=True):
        o = ~np.isnan(x)
        gain = A[o].T / psi[o]
        row[:] = np.linalg.solve(np.eye(A.shape[1]) + gain @ A[o], gain @ (x[o] - c[o]))
    return out


def test_transform_of_a_linear_decoder_is_the_exact_posterior_mean(ppca):
    """Not the encoder's mean: five epochs leave q(z|x) short of the posterior."""
    vae = GaussianVAE(
        n_components=2, **{**SMALL, "hidden_layer_sizes": (), "max_iter": 5}
    ).fit(ppca.X_train)
    assert vae.module_.has_linear_decoder
    X = ppca.X_test[:50]
    Z = vae.transform(X)
    assert_allclose(Z, linear_posterior_means(vae, X), rtol=1e-9, atol=1e-9)
    x = torch.tensor((X - vae.mean_) / vae.scale_, dtype=torch.float32)
    with torch.no_grad():
        encoded = vae.module_.encode(x.to(vae.device_))[0].cpu().numpy()
    assert np.abs(encoded - Z).max() > 0.05


def test_inverse_transform_is_the_decoder_mean_in_user_units(fitted, ppca):
    X = ppca.X_test
    X_hat = fitted.inverse_transform(fitted.transform(X))
    assert X_hat.shape == X.shape
    # In the data's own units, reconstructions are off by about the noise alone.
    residual = ((X - X_hat) ** 2).mean(0)
    assert (residual < 1.5 * ppca.noise_variance).all()
    assert (residual < 0.3 * X.var(0)).sum() >= 3
    with pytest.raises(ValueError, match="expects 2"):
        fitted.inverse_transform(np.zeros((3, 5)))
    # Views of any layout, as transform takes: torch refused negative strides.
    Z = fitted.transform(X[:20])
    for view in (Z[::-1], Z[:, ::-1], np.asfortranarray(Z)):
        expected = fitted.inverse_transform(np.array(view, order="C"))
        assert_array_equal(fitted.inverse_transform(view), expected)


def test_transform_keeps_float32(fitted, ppca):
    # As PCA: float32 data give float32 codes, those of float64 data (the
    # posterior is computed in float64 either way), a row with nothing
    # observed among them.
    X = ppca.X_test[:20].copy()
    X[0] = np.nan
    X[1, 2] = np.nan
    expected = fitted.transform(X)
    Z = fitted.transform(X.astype(np.float32))
    assert expected.dtype == np.float64 and Z.dtype == np.float32
    assert_allclose(Z, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_bit_identical_results(fitted, ppca):
    a = fitted
    b = GaussianVAE(n_components=2, **SMALL).fit(ppca.X_train)
    assert_array_equal(a.transform(ppca.X_test), b.transform(ppca.X_test))
    assert_array_equal(a.score_samples(ppca.X_test), b.score_samples(ppca.X_test))
    assert a.loss_curve_ == b.loss_curve_
    c = GaussianVAE(n_components=2, **{**SMALL, "random_state": 1}).fit(ppca.X_train)
    assert not np.allclose(a.transform(ppca.X_test), c.transform(ppca.X_test))


def global_state():
    """What fit and predict must leave as they found it."""
    state = {
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state()[1].copy(),  # noqa: NPY002
        "default_dtype": torch.get_default_dtype(),
        "num_threads": torch.get_num_threads(),
        "grad_enabled": torch.is_grad_enabled(),
        "inference_mode": torch.is_inference_mode_enabled(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def assert_same_state(after, before):
    assert after.keys() == before.keys()
    for key, value in before.items():
        if isinstance(value, list):  # CUDA: one state per device
            assert all(
                torch.equal(a, b) for a, b in zip(after[key], value, strict=True)
            )
        elif isinstance(value, (torch.Tensor, np.ndarray)):
            assert_array_equal(after[key], value, err_msg=key)
        else:
            assert after[key] == value, key


@pytest.mark.parametrize(
    "method",
    ["fit", "partial_fit", "transform", "inverse_transform", "score_samples", "sample"],
)
def test_nothing_global_changes(fitted, ppca, method):
    """Torch's and NumPy's RNGs, default dtype, threads and grad mode stay put."""
    X = ppca.X_test[:20]
    calls = {
        "fit": lambda: clone(fitted).set_params(max_iter=2).fit(X),
        "partial_fit": lambda: clone(fitted).partial_fit(X).partial_fit(X),
        "transform": lambda: fitted.transform(X),
        "inverse_transform": lambda: fitted.inverse_transform(np.ones((3, 2))),
        "score_samples": lambda: fitted.score_samples(X),
        "sample": lambda: fitted.sample(5),
    }
    before = global_state()
    calls[method]()
    assert_same_state(global_state(), before)


def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize(
    "mode",
    [
        lambda: torch.set_grad_enabled(False),
        lambda: torch.set_default_dtype(torch.float64),
        _one_thread,
        torch.inference_mode,
    ],
    ids=["no_grad", "default_float64", "one_thread", "inference_mode"],
)
def test_unusual_global_modes_change_no_result(fitted, ppca, mode):
    """A caller's global torch settings neither break nor alter fitting."""
    X = ppca.X_train[:100]
    expected = clone(fitted).set_params(max_iter=3).fit(X)
    saved = (
        torch.is_grad_enabled(),
        torch.get_default_dtype(),
        torch.get_num_threads(),
    )
    try:
        context = mode()
        with context if hasattr(context, "__enter__") else contextlib.nullcontext():
            before = global_state()
            vae = clone(fitted).set_params(max_iter=3).fit(X)
            scores, codes = vae.score_samples(ppca.X_test), vae.transform(ppca.X_test)
            assert_same_state(global_state(), before)
    finally:
        torch.set_grad_enabled(saved[0])
        torch.set_default_dtype(saved[1])
        torch.set_num_threads(saved[2])
    if mode is _one_thread and saved[2] != 1:
        # Float32 sums split over another number of threads round differently.
        assert_allclose(scores, expected.score_samples(ppca.X_test), rtol=1e-6)
        assert_allclose(codes, expected.transform(ppca.X_test), rtol=1e-5, atol=1e-6)
    else:
        assert_array_equal(scores, expected.score_samples(ppca.X_test))
        assert_array_equal(codes, expected.transform(ppca.X_test))


@pytest.mark.parametrize("n_threads", [4, 8])
def test_concurrent_calls_match_serial_ones(fitted, ppca, n_threads):
    """transform and score_samples are safe to call from several threads."""
    chunks = [ppca.X_test[i::n_threads] for i in range(n_threads)]
    serial = [(fitted.transform(c), fitted.score_samples(c)) for c in chunks]
    jobs = 4 * chunks  # each thread runs several calls, interleaved

    def both(X):
        return fitted.transform(X), fitted.score_samples(X)

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        results = list(pool.map(both, jobs))
    for (codes, scores), (expected_codes, expected_scores) in zip(
        results, 4 * serial, strict=True
    ):
        assert_array_equal(codes, expected_codes)
        assert_array_equal(scores, expected_scores)
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        draws = list(
            pool.map(lambda seed: fitted.sample(3, random_state=seed), range(8))
        )
    for seed, draw in enumerate(draws):
        assert_array_equal(draw, fitted.sample(3, random_state=seed))


def test_init_stores_parameters_untouched():
    vae = GaussianVAE(hidden_layer_sizes=[8, 4], device=torch.device("cpu"))
    assert vae.hidden_layer_sizes == [8, 4]
    assert vae.device == torch.device("cpu")
    assert not [k for k in vars(vae) if k.endswith("_")]


# --------------------------------------------------------------------- sample


@pytest.mark.slow
def test_sample(default_vae, ppca):
    vae = default_vae
    with pytest.raises(NotFittedError):
        GaussianVAE().sample(5)
    with pytest.raises(ValueError, match="at least one sample"):
        vae.sample(0)
    for n in (1, 2, 17):
        assert vae.sample(n).shape == (n, ppca.X_train.shape[1])
    draws = vae.sample(20000)
    # Seeded estimator: the same draws each time; another seed, others.
    assert_array_equal(vae.sample(5), vae.sample(5))
    assert not np.allclose(vae.sample(5, random_state=1), vae.sample(5))
    # Decoder noise included: the moments are those of the data. Without
    # the noise (0.5 per feature) the first feature's variance, 0.63, would
    # be 0.13; the fit's own error is up to 15 % (the fourth feature's).
    assert_allclose(
        draws.mean(0), ppca.b, atol=0.1 * np.sqrt(np.diag(ppca.covariance)).max()
    )
    covariance = np.cov(draws.T)
    assert_allclose(np.diag(covariance), np.diag(ppca.covariance), rtol=0.2)
    assert_allclose(covariance, ppca.covariance, atol=0.2 * ppca.covariance.max())


# -------------------------------------------------------------- the ELBO terms


def test_beta_changes_the_objective(fitted_300, ppca):
    X, with_kl = ppca.X_train[:300], fitted_300
    without = GaussianVAE(n_components=2, beta=0.0, **SMALL).fit(X)
    assert with_kl.loss_curve_ != without.loss_curve_
    # Without the KL term the posterior drifts away from the prior.
    assert without.kl_per_component_.sum() > 2 * with_kl.kl_per_component_.sum()


def test_kl_warmup_ramps_the_weight(fitted_300, ppca):
    X, cold = ppca.X_train[:300], fitted_300
    warm = GaussianVAE(n_components=2, kl_warmup=10, **SMALL).fit(X)
    assert warm.loss_curve_[0] < cold.loss_curve_[0]


@pytest.mark.parametrize("init", ["random", "linear"])
def test_fixed_decoder_variance_is_the_plain_mse_vae(ppca, init):
    X = ppca.X_train[:300]
    params = {**SMALL, "init": init, "decoder_variance": 0.25}
    vae = GaussianVAE(n_components=2, **params).fit(X)
    assert_allclose(vae.noise_variance_, 0.25 * vae.scale_**2)


def _heteroscedastic_rows(rng, n_samples=1000):
    """X = [t, -t, t/2] + noise, t ~ N(0, 1); the second feature's noise std is 0.1 e^t."""
    t = rng.normal(size=n_samples)
    noise_std = np.column_stack(
        [np.full(n_samples, 0.1), 0.1 * np.exp(t), np.full(n_samples, 0.1)]
    )
    X = np.column_stack([t, -t, 0.5 * t]) + noise_std * rng.normal(size=(n_samples, 3))
    return X, t, noise_std


def _heteroscedastic_log_likelihood(X):
    """log p(x) of those rows: the integral over t on a grid of step 0.01, far
    finer than the posterior of t, whose std is at most 0.09."""
    t = np.linspace(-7, 7, 1401)
    mean = np.column_stack([t, -t, 0.5 * t])
    std = np.column_stack([np.full_like(t, 0.1), 0.1 * np.exp(t), np.full_like(t, 0.1)])
    log_px_t = -0.5 * ((X[:, None] - mean) / std) ** 2 - np.log(std)
    log_joint = log_px_t.sum(-1) - 2 * np.log(2 * np.pi) - t**2 / 2
    return special.logsumexp(log_joint, axis=1) + np.log(t[1] - t[0])


def _upper_over_lower_noise(draws):
    """Variance of x0 + x1 (t cancels, leaving the second feature's noise) in the
    top quarter of x0 over that in the bottom quarter."""
    noise = draws[:, 0] + draws[:, 1]
    order = np.argsort(draws[:, 0])
    quarter = len(order) // 4
    return noise[order[-quarter:]].var() / noise[order[:quarter]].var()


@pytest.mark.slow
def test_heteroscedastic_decoder():
    """The decoder variance follows noise whose scale depends on the latent value."""
    rng = np.random.default_rng(0)
    X, t, noise_std = _heteroscedastic_rows(rng)
    params = {**SMALL, "n_components": 1, "max_iter": 60}
    vae = GaussianVAE(decoder_variance="heteroscedastic", **params).fit(X)
    assert vae.noise_variance_ is None
    assert vae.module_.variance_head_active
    assert np.isfinite(vae.score_samples(X)).all()
    assert np.isfinite(vae.sample(10)).all()
    z = torch.tensor(vae.transform(X), dtype=torch.float32, device=vae.device_)
    with torch.no_grad():
        variance = vae.module_.decode(z)[1].cpu().numpy() * vae.scale_**2
    assert variance.shape == X.shape
    # The second feature's noise variance grows 160-fold from the lowest
    # quarter of t to the highest; a variance that ignores z cannot follow it.
    assert stats.spearmanr(variance[:, 1], noise_std[:, 1])[0] > 0.9
    order = np.argsort(t)
    assert variance[order[-250:], 1].mean() > 5 * variance[order[:250], 1].mean()

    # Scoring uses the head's variance at each draw, not the per-feature one
    # stored at the end of the warm-up. On held-out rows whose true mean
    # log-likelihood is -0.26 per row, the model scores -0.29, and one with a
    # variance per feature -0.75; scored with the stored variance, the same
    # model got -0.78.
    X_test, _, _ = _heteroscedastic_rows(rng)
    true = _heteroscedastic_log_likelihood(X_test).mean()
    per_feature = GaussianVAE(decoder_variance="feature", **params).fit(X)
    assert abs(vae.score(X_test) - true) < 0.1
    assert vae.score(X_test) > per_feature.score(X_test) + 0.25

    # Samples add the head's noise too: the second feature's noise variance
    # in the top quarter of the first feature is 19 times that in the bottom
    # quarter in the data, 9.5 times in 20,000 samples, and 0.99 times with
    # the stored variance, which does not depend on z.
    assert _upper_over_lower_noise(X) > 5
    assert _upper_over_lower_noise(vae.sample(20000)) > 5


# ----------------------------------------------------------------- attributes


def test_fitted_attributes(fitted, ppca):
    n, d = ppca.X_train.shape
    assert fitted.n_features_in_ == d
    assert 1 <= fitted.n_iter_ <= 30 and len(fitted.loss_curve_) == fitted.n_iter_
    assert fitted.validation_scores_ is None and fitted.best_validation_score_ is None
    assert fitted.best_loss_ == min(fitted.loss_curve_)
    assert_allclose(fitted.mean_, ppca.X_train.mean(0))
    assert_allclose(fitted.scale_, ppca.X_train.std(0))
    assert fitted.noise_variance_.shape == (d,) and (fitted.noise_variance_ > 0).all()
    assert fitted.kl_per_component_.shape == (2,)
    assert isinstance(fitted.module_, torch.nn.Module)
    assert fitted.device_ == resolve_device(DEVICE)
    assert "module_" not in fitted.get_params()
    names = fitted.get_feature_names_out()
    assert_array_equal(names, ["gaussianvae0", "gaussianvae1"])


def test_loss_curve_is_the_negative_elbo_in_user_units(ppca):
    X = ppca.X_train[:500]
    vae = GaussianVAE(n_components=2, **SMALL).fit(X)
    assert vae.validation_scores_ is None and vae.best_loss_ == min(vae.loss_curve_)
    # The ELBO bounds the log-likelihood: -loss < mean score, roughly at the end.
    assert -vae.loss_curve_[-1] < vae.score(X) + 0.5
    doubled = GaussianVAE(n_components=2, **SMALL).fit(2 * X)
    assert_allclose(
        doubled.loss_curve_, np.add(vae.loss_curve_, X.shape[1] * np.log(2)), rtol=1e-6
    )


def test_validation_scores_and_incomplete_loss_curve_are_in_user_units(ppca):
    # standardize=True (in SMALL) and the same seed: on 2 * X the network sees
    # the same numbers, scale_ doubles exactly, and every log-density in the
    # units of X moves by minus the log-Jacobian of the map x -> 2x.
    X = ppca.X_train[:500]
    params = {**SMALL, "n_components": 2, "max_iter": 10}
    one = GaussianVAE(**{**params, "early_stopping": True}).fit(X)
    two = GaussianVAE(**{**params, "early_stopping": True}).fit(2 * X)
    assert one.n_iter_ == two.n_iter_ and len(one.validation_scores_) > 1
    # Complete rows, 5 features: 5 log 2 = 3.47 nats lower per row (measured
    # error 1e-15; 3.47 when the validation scores stay in internal units).
    shift = -X.shape[1] * np.log(2)
    assert_allclose(
        np.subtract(two.validation_scores_, one.validation_scores_),
        shift,
        rtol=0,
        atol=1e-9,
    )
    assert_allclose(
        two.best_validation_score_ - one.best_validation_score_,
        shift,
        rtol=0,
        atol=1e-9,
    )
    # With missing entries, the loss is the mean over the training rows (all
    # rows, without early stopping) of the negative ELBO of each row's observed
    # entries: log_jacobian weighs each log scale_ by the fraction of rows
    # observing that feature, so the loss moves by the mean number of observed
    # entries per row times log 2 (3.5 of 5 here: measured error 1e-15; 1.04
    # off when the loss is shifted as for complete rows).
    Xm = remove_at_random(X, 0.3, 0)
    one, two = GaussianVAE(**params).fit(Xm), GaussianVAE(**params).fit(2 * Xm)
    assert one.n_iter_ == two.n_iter_
    observed_per_row = (~np.isnan(Xm)).sum(1).mean()
    assert_allclose(
        np.subtract(two.loss_curve_, one.loss_curve_),
        observed_per_row * np.log(2),
        rtol=0,
        atol=1e-9,
    )


@pytest.mark.parametrize("change", ["missing entries", "gaussianized"])
def test_loss_curve_keeps_each_calls_units(ppca, change):
    # An epoch's loss is stored in the units of its own rows. The Jacobian of
    # a later chunk (other missing entries, other rows through the
    # Gaussianizing map) used to shift every earlier epoch: the first one's
    # loss moved from 9.32 to 6.01 after a second chunk.
    X = ppca.X_train[:600].copy()
    params = {**SMALL, "n_components": 2}
    if change == "missing entries":
        X[300:][np.random.default_rng(0).random((300, X.shape[1])) < 0.5] = np.nan
        X[300:][np.isnan(X[300:]).all(1), 0] = 1.0
    else:
        X = np.exp(X)  # skewed: "marginal" maps the chunks differently
        params["standardize"] = "marginal"
    vae = GaussianVAE(**params).partial_fit(X[:300])
    first = list(vae.loss_curve_)
    vae.partial_fit(X[300:])
    assert vae.loss_curve_[:1] == first
    assert len(vae.loss_curve_) == 2 and np.isfinite(vae.loss_curve_).all()
    # A warm-started fit keeps the earlier epochs too.
    warm = GaussianVAE(**{**params, "warm_start": True, "max_iter": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm.fit(X[:300])
        before = list(warm.loss_curve_)
        warm.fit(X[300:])
    assert warm.loss_curve_[: len(before)] == before


def test_set_output_pandas(fitted, ppca):
    pd = pytest.importorskip("pandas")
    out = clone(fitted).set_output(transform="pandas").fit(ppca.X_train[:100])
    frame = out.transform(ppca.X_test[:3])
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["gaussianvae0", "gaussianvae1"]


def test_feature_names_are_checked(ppca):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(ppca.X_train[:100], columns=list("abcde"))
    vae = GaussianVAE(n_components=2, **SMALL).fit(frame)
    assert_array_equal(vae.feature_names_in_, list("abcde"))
    with pytest.raises(ValueError, match="feature names"):
        vae.transform(frame.rename(columns={"a": "z"}))


# ------------------------------------------------------------- training control


def test_a_first_chunk_with_constant_features_warns(ppca):
    # One row fixes every scale from magnitudes alone; later chunks are seen
    # in those units for good.
    with pytest.warns(UserWarning, match=r"feature\(s\) \[0, 1, 2, 3, 4\]") as record:
        GaussianVAE(**SMALL).partial_fit(ppca.X_train[:1])
    assert record[0].filename == __file__
    X = ppca.X_train[:50].copy()
    X[:, 3] = 2.0
    with pytest.warns(UserWarning, match=r"feature\(s\) \[3\] are constant"):
        VAEImputer(**SMALL).partial_fit(X)
    # Not where the chunk varies, nor without standardizing, nor in fit.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        GaussianVAE(**SMALL).partial_fit(ppca.X_train[:50])
        GaussianVAE(**{**SMALL, "standardize": False}).partial_fit(ppca.X_train[:1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            GaussianVAE(**SMALL).fit(X)


def test_partial_fit_runs_one_epoch_and_keeps_the_scaling(ppca):
    vae = GaussianVAE(n_components=2, **SMALL)
    vae.partial_fit(ppca.X_train[:200])
    mean, scale = vae.mean_.copy(), vae.scale_.copy()
    vae.partial_fit(ppca.X_train[200:400] * 3)
    assert vae.n_iter_ == 2
    assert_array_equal(vae.mean_, mean)
    assert_array_equal(vae.scale_, scale)
    with pytest.raises(ValueError, match="features"):
        vae.partial_fit(ppca.X_train[:10, :3])


def test_warm_start_continues_training(ppca):
    X = ppca.X_train[:300]
    vae = GaussianVAE(n_components=2, warm_start=True, **{**SMALL, "max_iter": 5})
    vae.fit(X)
    first = vae.module_.decoder_mean.weight.detach().clone()
    vae.fit(X)
    assert vae.n_iter_ == 10
    assert not torch.equal(first, vae.module_.decoder_mean.weight)
    cold = GaussianVAE(n_components=2, **{**SMALL, "max_iter": 5}).fit(X)
    assert cold.fit(X).n_iter_ == 5


@pytest.mark.slow
def test_early_stopping_restores_the_best_weights(ppca):
    params = {**SMALL, "n_components": 2, "early_stopping": True, "n_iter_no_change": 2}
    vae = GaussianVAE(**{**params, "max_iter": 200}).fit(ppca.X_train)
    assert vae.n_iter_ < 200 and len(vae.validation_scores_) == vae.n_iter_
    assert vae.best_validation_score_ == max(vae.validation_scores_)
    assert vae.best_loss_ is None
    best = int(np.argmax(vae.validation_scores_))
    assert best < vae.n_iter_ - 1
    # A fit that ends at the best epoch trains identically up to it: the
    # restored weights are its weights, not those of the last epoch.
    at_best = GaussianVAE(**{**params, "max_iter": best + 1})
    at_best.fit(ppca.X_train)
    restored, expected = vae.module_.state_dict(), at_best.module_.state_dict()
    for name, value in expected.items():
        assert torch.equal(restored[name], value), name
    assert_array_equal(vae.transform(ppca.X_test), at_best.transform(ppca.X_test))


def test_early_stopping_needs_a_validation_row_and_a_training_row():
    X = np.random.default_rng(0).normal(size=(5, 2))
    with pytest.raises(
        ValueError, match="at least one validation row, but n_samples=3"
    ):
        GaussianVAE(**{**SMALL, "early_stopping": True}).fit(X[:3])
    # 0.9 of 5 rows holds out ceil(4.5) = 5: none left to train on.
    params = {**SMALL, "validation_fraction": 0.9}
    with pytest.raises(
        ValueError, match="at least one training row, but n_samples=5 .* holds out 5"
    ):
        GaussianVAE(**{**params, "early_stopping": True}).fit(X)
    # Where no validation rows are asked for, none are held out, whatever
    # the fraction: for early stopping, nor to choose the start or the map.
    for early_stopping in ("auto", False):
        params = {
            **params,
            "early_stopping": early_stopping,
            "init": "auto",
            "standardize": "auto",
            "hidden_layer_sizes": (4,),
            "max_iter": 3,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            vae = GaussianVAE(**params).fit(X)
        assert vae.validation_scores_ is None
        assert np.isfinite(vae.score_samples(X)).all()


def test_learning_rate_init_is_the_constant_rate(fitted_300, ppca):
    # At a constant rate the optimiser trains at learning_rate_init throughout
    # (the SMALL fits train at the default, 1e-3).
    params = {**SMALL, "n_components": 2, "max_iter": 2}
    vae = GaussianVAE(learning_rate_init=0.0123, **params).fit(ppca.X_train[:300])
    assert vae._optimizer.param_groups[0]["lr"] == 0.0123
    assert fitted_300._optimizer.param_groups[0]["lr"] == 1e-3


def test_a_tol_no_epoch_can_beat_stops_after_n_iter_no_change_plus_two_epochs(ppca):
    # With tol=1e9 no loss is ever an improvement but the first, which beats
    # the initial best loss of +inf. The stopping rule fires once more than
    # n_iter_no_change epochs in a row have not improved: epochs 2 to 5 for
    # n_iter_no_change=3 (a growing patience, a fifth of 5 epochs, is less).
    # At the default tol=1e-4 the loss still improves and all 30 epochs run.
    params = {**SMALL, "n_components": 2, "n_iter_no_change": 3}
    vae = GaussianVAE(tol=1e9, **params).fit(ppca.X_train[:300])
    assert vae.n_iter_ == 3 + 2 and len(vae.loss_curve_) == 5


def test_convergence_warning_when_max_iter_is_reached(ppca):
    with pytest.warns(ConvergenceWarning, match="maximum iterations") as record:
        GaussianVAE(n_components=2, **{**SMALL, "max_iter": 2}).fit(ppca.X_train[:50])
    assert record[0].filename == __file__  # points at the caller of fit


def test_warm_start_fit_runs_the_stopping_rule_afresh():
    # The second fit continues from the fitted weights on other rows; the
    # first fit's best loss and no-improvement count are no reference for it,
    # so it trains for at least n_iter_no_change + 1 epochs, not one.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    vae = GaussianVAE(
        hidden_layer_sizes=(8,),
        n_iter_no_change=3,
        max_iter=300,
        warm_start=True,
        random_state=0,
        device=DEVICE,
    ).fit(X)
    first, first_best = vae.n_iter_, vae.best_validation_score_
    vae.fit(X[:100] * 2.0)
    assert vae.n_iter_ - first >= 4
    # Twice as spread, the new rows score far below the first fit's best:
    # a stopping rule that kept that best would never find a better one.
    assert vae.best_validation_score_ < first_best - 1.0
    assert vae.best_validation_score_ >= max(vae.validation_scores_[first:])


def test_n_components_none_is_one_latent_dimension_per_feature(ppca):
    vae = GaussianVAE(n_components=None, **{**SMALL, "max_iter": 2}).fit(ppca.X_train)
    n_features = ppca.X_train.shape[1]
    assert vae.transform(ppca.X_train[:5]).shape == (5, n_features)
    assert vae.kl_per_component_.shape == (n_features,)
    assert vae.get_params()["n_components"] is None


def test_verbose_prints_one_line_per_epoch(ppca, capsys):
    GaussianVAE(n_components=2, verbose=1, **{**SMALL, "max_iter": 3}).fit(
        ppca.X_train[:50]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line]
    assert len(lines) == 3
    assert re.match(r"Epoch 1, loss = -?\d+\.\d+", lines[0])


def test_divergence_is_recovered_without_nan(ppca):
    # A step of 1e6 makes the first epoch's loss non-finite: the epoch is
    # rolled back and rerun at half the rate, 8 times (measured), and training
    # goes on at 1e6 / 2**8. At a step of 1.0 these rows never diverged.
    X = ppca.X_train[:300] * 1e6
    with pytest.warns(RuntimeWarning, match="non-finite") as record:
        vae = GaussianVAE(n_components=2, learning_rate_init=1e6, **SMALL).fit(X)
    recoveries = sum("non-finite" in str(w.message) for w in record)
    assert vae._optimizer.param_groups[0]["lr"] == 1e6 / 2**recoveries
    assert len(vae.loss_curve_) == vae.n_iter_ and np.isfinite(vae.loss_curve_).all()
    assert np.isfinite(vae.score_samples(X)).all()
    assert np.isfinite(vae.transform(X)).all()
    assert all(torch.isfinite(p).all() for p in vae.module_.parameters())


@pytest.mark.parametrize("n_samples", [1, 2, 5])
def test_tiny_data_and_batch_larger_than_data(n_samples):
    X = np.arange(n_samples * 3, dtype=float).reshape(n_samples, 3)
    vae = GaussianVAE(batch_size=64, n_components=2, **{**SMALL, "max_iter": 3}).fit(X)
    assert vae.batch_size_ == n_samples
    assert np.isfinite(vae.score_samples(X)).all()
    assert vae.transform(X).shape == (n_samples, 2)
    default = GaussianVAE(max_iter=3, random_state=0, device=DEVICE).fit(X)
    assert np.isfinite(default.score_samples(X)).all()


@pytest.mark.parametrize(
    "n_samples, expected",
    # About n/32, a power of two, at least 32 rows and at most 1024.
    [(5, 5), (100, 32), (1000, 32), (1500, 64), (2800, 64), (3000, 128), (10**6, 1024)],
)
def test_auto_batch_size(n_samples, expected):
    assert _training.auto_batch_size(n_samples) == expected


def test_auto_batch_size_counts_the_training_rows():
    # 3,200 rows give batches of 128 (3200 / 32 = 100 is nearer 128 than 64
    # in log2); early stopping leaves 2,880 to train on, which give 64.
    X = np.random.default_rng(0).normal(size=(3200, 2))
    params = {**SMALL, "n_components": 1, "max_iter": 1}
    assert GaussianVAE(**params).fit(X).batch_size_ == 128
    params["early_stopping"] = True
    assert GaussianVAE(**params).fit(X).batch_size_ == 64


def _weight_norm(vae):
    return sum(
        float(p.detach().square().sum())
        for name, p in vae.module_.named_parameters()
        if name.endswith("weight")
    )


def test_alpha_is_a_gaussian_prior_on_the_weights_of_the_rows_trained_on(ppca):
    # alpha / 2 ||W||^2 added to the negative ELBO summed over the training
    # rows is a weight decay of alpha per training row on the mean loss: 180
    # rows of 200 with early stopping. Biases are not penalized.
    X = ppca.X_train[:200]
    params = {**SMALL, "n_components": 2, "max_iter": 20}

    def decays(vae):
        return [group["weight_decay"] for group in vae._optimizer.param_groups]

    held_out = GaussianVAE(**{**params, "alpha": 900.0, "early_stopping": True})
    held_out.fit(X)
    assert decays(held_out) == [900.0 / 180, 0.0]
    # The shrinkage, without early stopping: it restores the epoch with the
    # best validation ELBO, which leaves the prior out and can be the start
    # (one seed in eight on the CPU, and seed 0's draws on CUDA).
    params["early_stopping"] = False
    plain = GaussianVAE(alpha=0.0, **params).fit(X)
    penalized = GaussianVAE(alpha=900.0, **params).fit(X)
    assert decays(plain) == [0.0]
    assert decays(penalized) == [900.0 / 200, 0.0]
    # 0.32-0.41 over seeds 0-7 on the CPU.
    assert _weight_norm(penalized) < 0.5 * _weight_norm(plain)


def test_a_new_alpha_applies_to_warm_started_and_partial_fits(ppca):
    X = ppca.X_train[:200]
    params = {**SMALL, "n_components": 2, "max_iter": 3, "early_stopping": False}
    vae = GaussianVAE(warm_start=True, **params).fit(X)
    steps = 3 * int(np.ceil(200 / vae.batch_size_))
    weight = vae.module_.decoder_mean.weight

    def state():
        return vae._optimizer.state[weight]

    assert float(state()["step"]) == steps
    vae.set_params(alpha=4.0).fit(X)
    assert vae._optimizer.param_groups[0]["weight_decay"] == 4.0 / 200
    # Adam's moments and step carry on: the warm start continues training.
    assert float(state()["step"]) == 2 * steps
    vae.partial_fit(X[:50])
    assert vae._optimizer.param_groups[0]["weight_decay"] == 4.0 / 50
    vae.set_params(alpha=0.0).fit(X)
    assert [g["weight_decay"] for g in vae._optimizer.param_groups] == [0.0]
    assert float(state()["step"]) == 3 * steps + int(np.ceil(50 / vae.batch_size_))


def affine_defect(f, A, seed=0):
    """How far f is from affine on the rows of A, relative to its outputs.

    Compares f at random convex combinations of pairs of rows with the same
    combinations of f at those rows; zero, up to rounding, for an affine f.
    """
    w = np.random.default_rng(seed).uniform(size=(len(A) // 2, 1))
    a, b = A[: len(w)], A[len(w) : 2 * len(w)]
    mixed = f(w * a + (1 - w) * b)
    return np.abs(mixed - (w * f(a) + (1 - w) * f(b))).max() / np.abs(mixed).max()


def test_linear_vae_with_identity_activation(ppca):
    """With activation="identity", hidden layers compose to affine maps."""
    params = {**SMALL, "hidden_layer_sizes": (16, 8)}
    del params["activation"]
    X = ppca.X_train[:300]
    codes = np.random.default_rng(1).normal(size=(100, 2)) * 2
    vae = GaussianVAE(n_components=2, activation="identity", **params).fit(X)
    assert affine_defect(vae.transform, ppca.X_test[:100]) < 1e-10
    assert affine_defect(vae.inverse_transform, codes) < 1e-10
    # The check has the power to see a nonlinearity: ReLU layers fail it.
    relu = GaussianVAE(n_components=2, activation="relu", **params).fit(X)
    assert affine_defect(relu.transform, ppca.X_test[:100]) > 1e-3
    assert affine_defect(relu.inverse_transform, codes) > 1e-3


# ------------------------------------------------------------ persistence, clone


@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_round_trips_give_identical_outputs(fitted, ppca, how, tmp_path):
    if how == "pickle":
        restored = pickle.loads(pickle.dumps(fitted))
    else:
        joblib.dump(fitted, tmp_path / "model.joblib")
        restored = joblib.load(tmp_path / "model.joblib")
    X = ppca.X_test[:50]
    assert_array_equal(restored.score_samples(X), fitted.score_samples(X))
    assert_array_equal(restored.transform(X), fitted.transform(X))
    assert_array_equal(restored.sample(4), fitted.sample(4))
    assert restored.partial_fit(ppca.X_train[:100]).n_iter_ == fitted.n_iter_ + 1


def test_pickle_keeps_weights_on_the_cpu_and_leaves_the_model_alone(fitted):
    state = fitted.__getstate__()
    # Plain numpy arrays: nothing in a pickle refers to a device.
    weights = state["module_"]["weights"]
    assert set(weights) == set(fitted.module_.state_dict())
    assert all(type(w) is np.ndarray for w in weights.values())
    assert "_optimizer" not in state
    assert hasattr(fitted, "_optimizer") and hasattr(fitted, "device_")


def test_unavailable_device_on_load_falls_back_to_the_cpu(fitted, monkeypatch):
    blob = pickle.dumps(copy.deepcopy(fitted).set_params(device="cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="loaded on the CPU"):
        restored = pickle.loads(blob)
    assert restored.device_ == torch.device("cpu")
    assert restored.device == "cuda"


def test_clone_gives_an_unfitted_copy(fitted):
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    with pytest.raises(NotFittedError):
        copy.transform(np.zeros((1, 5)))


# ---------------------------------------------------------- pipelines, searches


@pytest.mark.slow
def test_pipeline_and_unsupervised_grid_search(ppca):
    pipe = make_pipeline(
        FunctionTransformer(np.asarray), GaussianVAE(**{**SMALL, "max_iter": 60})
    )
    search = GridSearchCV(pipe, {"gaussianvae__n_components": [1, 2]}, cv=3)
    search.fit(ppca.X_train[:600])
    # The data have two latent factors: the likelihood prefers two components.
    assert search.best_params_ == {"gaussianvae__n_components": 2}
    assert search.transform(ppca.X_test).shape == (len(ppca.X_test), 2)


@pytest.mark.slow
def test_grid_search_in_parallel_workers(ppca):
    """Fits in worker processes score as they do in this one."""
    search = GridSearchCV(
        GaussianVAE(**{**SMALL, "max_iter": 5}),
        {"n_components": [1, 2]},
        cv=2,
        n_jobs=2,
    )
    serial = clone(search).set_params(n_jobs=1).fit(ppca.X_train[:200])
    search.fit(ppca.X_train[:200])
    assert search.best_params_ == serial.best_params_
    # Workers may run torch on fewer threads: float32 sums round differently.
    for split in ("split0_test_score", "split1_test_score"):
        assert_allclose(search.cv_results_[split], serial.cv_results_[split], rtol=1e-6)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "X, message",
    [
        (np.array([[1.0, np.inf], [2.0, 3.0]]), "infinity"),
        (np.array([["a", "b"], ["c", "d"]]), "could not convert|numeric"),
        (np.empty((0, 3)), "0 sample"),
        (np.arange(5.0), "2D array"),
    ],
)
def test_bad_input_is_a_clear_value_error(X, message):
    with pytest.raises(ValueError, match=message):
        GaussianVAE(**SMALL).fit(X)


def test_wrong_number_of_features(fitted):
    with pytest.raises(
        ValueError, match="X has 3 features, but GaussianVAE is expecting 5"
    ):
        fitted.score_samples(np.zeros((2, 3)))


@pytest.mark.parametrize(
    "params",
    [
        {"n_components": 0},
        {"decoder_variance": "diagonal"},
        {"decoder_variance": -1.0},
        {"min_variance": 0.0},
        # Past float32 (torch raised on building the network) and past the
        # Sobol' engine's 2**30 points (torch overflowed while scoring).
        {"min_variance": 1e39},
        {"decoder_variance": 1e39},
        {"n_importance_samples": 2**30 + 1},
        {"batch_size": 0},
        {"early_stopping": "yes"},
        {"activation": "gelu"},
        {"shrinkage": 1.5},
        {"shrinkage": "ledoit-wolf"},
    ],
)
def test_invalid_parameters(params):
    with pytest.raises(InvalidParameterError, match=next(iter(params))):
        GaussianVAE(**params).fit(np.ones((5, 2)))


@pytest.mark.parametrize(
    "sizes", [(0,), (4, -1), (2.5,), [[3]], (True,), np.array(5), 0, True, 8.0]
)
def test_invalid_hidden_layer_sizes(sizes):
    with pytest.raises(ValueError, match="hidden_layer_sizes"):
        GaussianVAE(hidden_layer_sizes=sizes).fit(np.ones((5, 2)))


def test_one_int_is_one_hidden_layer(ppca):
    # As in MLPRegressor; the parameter itself is stored untouched.
    params = {**SMALL, "n_components": 2, "max_iter": 2, "warm_start": True}
    vae = GaussianVAE(**{**params, "hidden_layer_sizes": 8}).fit(ppca.X_train[:100])
    assert vae.hidden_layer_sizes == 8 and vae.module_.hidden_layer_sizes == (8,)
    vae.fit(ppca.X_train[:100])  # the same shape for a warm start
    as_tuple = GaussianVAE(**{**params, "hidden_layer_sizes": (8,)})
    assert_allclose(
        vae.set_params(warm_start=False).fit(ppca.X_train[:100]).transform(ppca.X_test),
        as_tuple.fit(ppca.X_train[:100]).transform(ppca.X_test),
        rtol=1e-5,
    )


@pytest.mark.parametrize("n_samples", [2.0, True, "3", np.float64(1)])
def test_sample_needs_an_integer(fitted, n_samples):
    with pytest.raises(TypeError, match="n_samples must be an integer"):
        fitted.sample(n_samples)


@pytest.mark.parametrize("init", ["auto", "linear"])
def test_more_latent_dimensions_than_features_need_a_random_start(init):
    X = np.random.default_rng(0).normal(size=(40, 3))
    with pytest.raises(ValueError, match=r"n_components=4 is more than the 3 features"):
        GaussianVAE(**{**SMALL, "n_components": 4, "init": init}).fit(X)
    vae = GaussianVAE(**{**SMALL, "n_components": 4, "init": "random", "max_iter": 2})
    assert vae.fit(X).transform(X).shape == (40, 4)


def test_more_prior_components_than_rows_is_a_clear_error():
    X = np.random.default_rng(0).normal(size=(30, 3))
    with pytest.raises(
        ValueError, match=r"prior_components=50 is more than the rows .* n_samples=30"
    ):
        GaussianVAE(**{**SMALL, "prior_components": 50, "init": "linear"}).fit(X)


@pytest.mark.parametrize(
    "change, X_new",
    [
        # Each raised after fit had set new statistics (or n_features_in_)
        # beside the old network: the estimator then scored with both.
        ({"early_stopping": True}, np.ones((3, 3))),
        ({"device": "gpu0"}, None),
        ({}, np.full((30, 3), np.nan)),  # features never observed
        ({"prior_components": 50, "init": "linear"}, None),
    ],
)
def test_a_failed_fit_leaves_the_estimator_as_it_was(change, X_new):
    X = np.random.default_rng(0).normal(size=(30, 3)) * [1.0, 10.0, 100.0]
    vae = GaussianVAE(**SMALL).fit(X)
    state = copy.deepcopy(vae.__dict__)
    scores = vae.score_samples(X)
    X_new = (X[:, :2] + 50.0) if X_new is None else X_new
    with pytest.raises(ValueError):
        vae.set_params(**change).fit(X_new)
    vae.set_params(**{name: state[name] for name in change})
    assert vae.__dict__.keys() == state.keys()
    assert vae.n_features_in_ == 3 and vae.mean_.tolist() == state["mean_"].tolist()
    assert_array_equal(vae.score_samples(X), scores)
    # A first fit that fails leaves the estimator unfitted.
    fresh = GaussianVAE(**{**SMALL, **change})
    with pytest.raises(ValueError):
        fresh.fit(X_new)
    assert not hasattr(fresh, "n_features_in_")
    with pytest.raises(NotFittedError):
        fresh.transform(X)


def test_an_interrupted_fit_leaves_the_estimator_as_it_was(monkeypatch):
    # Ctrl-C in training left a new, untrained network and new mean_ beside
    # the last fit's kl_per_component_ and n_iter_.
    X = np.random.default_rng(0).normal(size=(60, 4))
    vae = GaussianVAE(**SMALL).fit(X)
    state = copy.deepcopy(vae.__dict__)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(_base, "fit_module", interrupt)
    with pytest.raises(KeyboardInterrupt):
        vae.set_params(n_components=2).fit(X * 100 + 5)
    vae.set_params(n_components=state["n_components"])
    assert vae.__dict__.keys() == state.keys()
    assert_array_equal(vae.mean_, state["mean_"])
    assert vae.n_components_ == len(vae.kl_per_component_) == 4


@pytest.mark.parametrize(
    "change",
    [
        {"hidden_layer_sizes": (4,)},
        {"activation": "logistic"},
        {"n_components": 1},
        {"decoder_variance": "heteroscedastic"},
        {"prior_components": 3},
        {"n_components": None},  # one per feature, with init="random"
        {"standardize": False},  # the features' map fitted: mean_ and scale_
        {"standardize": "marginal"},
    ],
)
def test_warm_start_and_partial_fit_refuse_a_new_network_shape(ppca, change):
    X = ppca.X_train[:100]
    vae = GaussianVAE(n_components=2, warm_start=True, **{**SMALL, "max_iter": 2})
    vae.fit(X).set_params(**change)
    name = next(iter(change))
    with pytest.raises(ValueError, match=f"{name}=.* differs from the fitted network"):
        vae.fit(X)
    with pytest.raises(ValueError, match=f"{name}=.* differs from the fitted network"):
        vae.partial_fit(X)
    vae.set_params(warm_start=False).fit(X)  # a new network of the new shape


def test_a_changed_variance_kind_is_named_as_given(ppca):
    X = ppca.X_train[:100]
    vae = GaussianVAE(warm_start=True, **{**SMALL, "max_iter": 2}).fit(X)
    message = r"decoder_variance=0.5 differs from the fitted network's 'feature'"
    with pytest.raises(ValueError, match=message):
        vae.set_params(decoder_variance=0.5).fit(X)
    vae.set_params(warm_start=False).fit(X).set_params(decoder_variance="shared")
    message = r"decoder_variance='shared' differs .* a fixed variance"
    with pytest.raises(ValueError, match=message):
        vae.partial_fit(X)


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_warm_start_and_partial_fit_train_with_the_variances_set_now(ppca, method):
    # min_variance and a fixed decoder_variance are values, not the shape:
    # they were kept from the first fit whatever set_params said.
    X = ppca.X_train[:200]
    params = dict(decoder_variance=0.5, warm_start=True, **SMALL)
    vae = GaussianVAE(**params).fit(X)
    getattr(vae.set_params(decoder_variance=50.0), method)(X)
    assert_allclose(vae.noise_variance_, 50.0 * vae.scale_**2, rtol=1e-6)
    # A floor above the fixed variance raises it, as in a new fit.
    getattr(vae.set_params(min_variance=80.0), method)(X)
    assert vae.module_.min_variance == 80.0
    assert_allclose(vae.noise_variance_, 80.0 * vae.scale_**2, rtol=1e-6)
    fresh = GaussianVAE(**{**params, "decoder_variance": 50.0, "min_variance": 80.0})
    assert_allclose(fresh.fit(X).noise_variance_, vae.noise_variance_, rtol=1e-6)
    # A per-feature variance: trained on with the new floor under it.
    vae = GaussianVAE(**{**params, "decoder_variance": "feature"}).fit(X)
    getattr(vae.set_params(min_variance=5.0), method)(X)
    assert vae.module_.min_variance == 5.0
    assert (vae.noise_variance_ >= 5.0 * vae.scale_**2 * (1 - 1e-6)).all()


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_a_heteroscedastic_decoders_min_variance_cannot_change(ppca, method):
    # Its variances are min_variance + exp(head): a new value shifted every
    # fitted variance by the change (1.02 became 1.52 for 0.5), not a floor.
    X = ppca.X_train[:100]
    params = dict(decoder_variance="heteroscedastic", warm_start=True, **SMALL)
    vae = GaussianVAE(**{**params, "max_iter": 12}).fit(X)
    scores, fitted = vae.score_samples(X), vae.min_variance
    vae.set_params(min_variance=0.5)
    with pytest.raises(ValueError, match=r"min_variance=0.5 differs .* shift them"):
        getattr(vae, method)(X)
    assert vae.module_.min_variance == fitted
    assert_array_equal(vae.score_samples(X), scores)


def test_warm_start_takes_standardize_auto_as_the_map_it_fitted(ppca):
    X = ppca.X_train[:100]
    vae = GaussianVAE(n_components=2, warm_start=True, **{**SMALL, "max_iter": 2})
    vae.fit(X).set_params(standardize="auto").fit(X)
    assert vae.n_iter_ == 4
    unscaled = GaussianVAE(**{**SMALL, "standardize": False, "warm_start": True})
    unscaled.fit(X / 10).set_params(standardize="auto")
    with pytest.raises(ValueError, match="standardize='auto' differs .* False"):
        unscaled.fit(X / 10)
    # Fitted before the map was stored: read off mean_ = 0 and scale_ = 1.
    del unscaled._unscaled
    unscaled.set_params(standardize=False).fit(X / 10)
    # numpy's False is False: the features are left as they are.
    numpy_false = GaussianVAE(**{**SMALL, "standardize": np.False_, "warm_start": True})
    numpy_false.fit(X / 10).fit(X / 10)
    assert not numpy_false.mean_.any() and (numpy_false.scale_ == 1).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_warm_start_with_an_unavailable_device_warns_and_trains_on(ppca):
    # As a model loaded on a machine without its device: on where it is.
    X = ppca.X_train[:100]
    vae = GaussianVAE(n_components=2, warm_start=True, **{**SMALL, "max_iter": 2})
    vae.fit(X).set_params(device="cuda")
    with pytest.warns(UserWarning, match="CUDA is not available.*goes on on cpu") as r:
        vae.fit(X)
    assert r[0].filename == __file__  # points at the caller of fit
    with pytest.warns(UserWarning, match="CUDA is not available"):
        vae.partial_fit(X)
    assert vae.n_iter_ == 5 and vae.device_.type == "cpu"


def test_a_device_move_keeps_adams_state_and_takes_the_new_flags(ppca):
    # torch.device("cpu", 0) != torch.device("cpu"): the move to device="cpu"
    # runs on any machine. The optimiser is rebuilt for the device (here
    # fused, where it was plain) with the old moments, step and settings.
    X = ppca.X_train[:100]
    params = {**SMALL, "max_iter": 2, "alpha": 1.0, "warm_start": True}
    vae = GaussianVAE(n_components=2, **params).fit(X)
    named = list(vae.module_.named_parameters())
    weights = [p for n, p in named if n.endswith("weight")]
    biases = [p for n, p in named if not n.endswith("weight")]
    plain = torch.optim.Adam(
        [
            {"params": weights, "weight_decay": 0.5},
            {"params": biases, "weight_decay": 0.0},
        ],
        lr=3e-4,
    )
    plain.load_state_dict(vae._optimizer.state_dict())  # its groups' too:
    for group, weight_decay in zip(plain.param_groups, (0.5, 0.0), strict=True):
        group.update(lr=3e-4, weight_decay=weight_decay, fused=None)
    vae._optimizer, vae.device_ = plain, torch.device("cpu", 0)
    before = copy.deepcopy(plain.state_dict())
    vae._follow_device()
    assert vae.device_ == torch.device("cpu")
    after = vae._optimizer.state_dict()
    for index, state in before["state"].items():
        for key, value in state.items():
            assert_array_equal(after["state"][index][key].cpu(), value), key
    fresh = make_optimizer(vae.module_, 1e-3, 0.5).param_groups[0]
    for group, old in zip(after["param_groups"], before["param_groups"], strict=True):
        assert group["lr"] == 3e-4 and group["weight_decay"] == old["weight_decay"]
        assert group.get("fused") == fresh.get("fused")
    vae.partial_fit(X)  # trains on with the moved state
    weight = vae.module_.decoder_mean.weight
    assert float(vae._optimizer.state[weight]["step"]) == float(
        before["state"][0]["step"]
    ) + np.ceil(100 / vae.batch_size_)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_warm_start_and_partial_fit_move_to_a_new_device(ppca):
    # Fitted on the CPU, trained on with device="cuda": the module and
    # Adam's moments move, and training goes on from the fitted weights.
    X = ppca.X_train[:100]
    vae = GaussianVAE(
        n_components=2, warm_start=True, **{**SMALL, "max_iter": 2, "device": "cpu"}
    ).fit(X)
    weight = vae.module_.decoder_mean.weight
    steps = float(vae._optimizer.state[weight]["step"])
    vae.set_params(device="cuda").partial_fit(X)
    assert vae.device_.type == "cuda"
    assert all(p.device.type == "cuda" for p in vae.module_.parameters())
    state = vae._optimizer.state[vae.module_.decoder_mean.weight]
    assert state["exp_avg"].device.type == "cuda"
    assert float(state["step"]) > steps
    vae.set_params(device="cpu").fit(X)
    assert vae.module_.decoder_mean.weight.device.type == "cpu"
    assert np.isfinite(vae.score_samples(X)).all()


def test_read_only_input_is_accepted_without_warnings(fitted, ppca):
    # A memory map, or a pandas copy-on-write view: torch warns on tensors
    # that share the memory of a read-only array.
    X = ppca.X_test[:20].copy()
    X.setflags(write=False)
    Z = fitted.transform(X)
    Z.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.score_samples(X)
        fitted.transform(X)
        fitted.inverse_transform(Z)


def test_invalid_device():
    with pytest.raises(ValueError, match="not a valid torch device"):
        GaussianVAE(**{**SMALL, "device": "gpu0"}).fit(np.ones((5, 2)))


def _spy_on_training(monkeypatch):
    """The (starting learning rate, learning_rate_drops) of every training run."""
    calls = []

    def spy(module, optimizer, data, config, history):
        rate = config.learning_rate_init
        if rate is None:  # goes on at the optimiser's current rate
            rate = optimizer.param_groups[0]["lr"]
        calls.append((rate, config.learning_rate_drops))
        return fit_module(module, optimizer, data, config, history)

    monkeypatch.setattr(_base, "fit_module", spy)
    return calls


@pytest.mark.slow
def test_auto_start_keeps_the_nonlinear_network_on_a_curved_manifold(monkeypatch):
    X, held_out = two_factor_manifold(3000, seed=1), two_factor_manifold(1000, seed=2)
    calls = _spy_on_training(monkeypatch)
    vae = GaussianVAE(random_state=0, device=DEVICE).fit(X)
    assert vae.init_ == "random" and vae.module_.n_components == 2
    # n_components=None: the output's width is the kept network's, and says so.
    assert vae.n_components_ == 2 and vae.transform(X[:3]).shape == (3, 2)
    assert vae.get_feature_names_out().tolist() == ["gaussianvae0", "gaussianvae1"]
    # The start, the network to its first plateau, then the network on at a
    # tenth of the rate: it was not behind the start.
    assert calls == [(1e-3, 2), (1e-3, 0), (pytest.approx(1e-4), 1)]
    linear = GaussianVAE(init="linear", random_state=0, device=DEVICE).fit(X)
    assert vae.score(held_out) > linear.score(held_out) + 0.3


def test_auto_start_keeps_the_closed_form_on_gaussian_data(ppca):
    vae = GaussianVAE(random_state=0, device=DEVICE).fit(ppca.X_train)
    assert vae.init_ == "linear" and vae.module_.n_components == 5
    assert vae.n_components_ == 5 and vae.transform(ppca.X_test[:3]).shape == (3, 5)
    gap = ppca.true_log_likelihood(ppca.X_test).mean() - vae.score(ppca.X_test)
    assert abs(gap) < 0.05


def test_a_network_far_behind_the_start_stops_at_its_first_plateau(monkeypatch):
    # A full-rank Gaussian in 6 features: the start is its exact fit, the
    # two-dimensional network cannot follow, so it is not trained on at the
    # lower rates.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 6)) @ rng.normal(size=(6, 6))
    calls = _spy_on_training(monkeypatch)
    vae = GaussianVAE(random_state=0, device=DEVICE).fit(X)
    assert vae.init_ == "linear"
    assert calls == [(1e-3, 2), (1e-3, 0)]


def test_a_network_far_behind_the_start_gets_no_growing_patience(monkeypatch):
    # With a patience as long as the run (growth 1) in the network's
    # training, a network left alone would never reach a plateau and would
    # run all max_iter epochs. The start clearly leads it here, so it stops
    # where a fixed patience does.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 6)) @ rng.normal(size=(6, 6))

    def network_epochs(growth):
        runs = []

        def spy(module, optimizer, data, config, history):
            network = not module.linear_path
            with monkeypatch.context() as patch:
                if network:
                    patch.setattr(_training, "PATIENCE_GROWTH", growth)
                result = fit_module(module, optimizer, data, config, history)
            runs.append((network, history.n_iter))
            return result

        monkeypatch.setattr(_base, "fit_module", spy)
        vae = GaussianVAE(max_iter=300, random_state=0, device=DEVICE).fit(X)
        assert vae.init_ == "linear"
        [(_, epochs)] = [run for run in runs if run[0]]
        return epochs

    fixed = network_epochs(0.0)
    assert fixed < 100
    assert network_epochs(1.0) == fixed


def test_sample_draws_from_the_mixture_prior():
    """Draws follow the clusters a mixture prior learned, in their proportions."""
    rng = np.random.default_rng(0)
    labels = rng.random(3000) < 0.3
    X = np.where(labels[:, None], 6.0, -2.0) + rng.normal(size=(3000, 3))
    vae = GaussianVAE(random_state=0, device=DEVICE).fit(X)
    assert vae.init_ == "linear" and vae.module_.prior_components >= 2
    draws = vae.sample(20_000)
    assert abs((draws.mean(1) > 2.0).mean() - labels.mean()) < 0.02
    # Bimodal as the data: hardly any draw between the clusters, where a
    # Gaussian with the data's mean and covariance puts a fifth of its mass.
    between = (np.abs(draws.mean(1) - 2.0) < 1.0).mean()
    assert between < 0.01 + (np.abs(X.mean(1) - 2.0) < 1.0).mean()
    assert_allclose(draws.mean(0), X.mean(0), atol=0.1)
    assert_allclose(np.cov(draws.T), np.cov(X.T), atol=0.3)
