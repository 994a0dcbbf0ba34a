"""Missing values in GaussianVAE: masked ELBO, marginal likelihood, edge cases."""

import numpy as np
import pytest
import torch
from conftest import (
    DEVICE,
    N_COMPONENTS,
    N_FEATURES,
    NOISE,
    RANDOM_START,
    exact_linear_gaussian_vae,
    remove_at_random,
)
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from skvae import GaussianVAE
from skvae._device import make_generator
from skvae._incomplete import incomplete_gaussian, observed_log_density
from skvae._likelihood import log_mean_exp
from skvae._model import STD_FLOOR, VAEModule
from skvae._training import posterior_statistics, set_epoch_variance

SMALL = dict(
    hidden_layer_sizes=(16,), max_iter=30, random_state=0, device=DEVICE, **RANDOM_START
)

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def marginal_of_observed(mean, covariance, x):
    """Closed-form log-density of the observed entries of x under N(mean, cov)."""
    o = ~np.isnan(x)
    return stats.multivariate_normal(mean[o], covariance[np.ix_(o, o)]).logpdf(x[o])


@pytest.fixture(scope="module")
def fitted_with_nan(ppca):
    return GaussianVAE(n_components=2, **SMALL).fit(
        remove_at_random(ppca.X_train, 0.2, 0)
    )


# ------------------------------------------------------------------ the model


@pytest.mark.parametrize("mask_input", [False, True])
def test_all_true_mask_is_the_full_likelihood(mask_input):
    torch.manual_seed(0)
    module = VAEModule(3, 2, (5,), "tanh", "feature", 1e-4, mask_input)
    module = module.double().to(DEVICE)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, dtype=torch.float64, generator=generator).to(DEVICE)
    eps = torch.randn(8, 2, dtype=torch.float64, generator=generator).to(DEVICE)
    mask = torch.ones_like(x, dtype=torch.bool)
    with torch.no_grad():
        full, masked = (
            module.training_terms(x, eps),
            module.training_terms(x, eps, mask),
        )
        for a, b in zip(full, masked, strict=True):
            assert_array_equal(a.cpu().numpy(), b.cpu().numpy())
        draws = eps[:5]
        assert_array_equal(
            module.importance_log_weights(x, draws).cpu().numpy(),
            module.importance_log_weights(x, draws, mask).cpu().numpy(),
        )


def test_masked_terms_ignore_the_values_of_missing_entries():
    torch.manual_seed(0)
    module = VAEModule(3, 2, (5,), "tanh", "feature", 1e-4, True).double().to(DEVICE)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, dtype=torch.float64, generator=generator).to(DEVICE)
    eps = torch.randn(6, 2, dtype=torch.float64, generator=generator).to(DEVICE)
    mask = (torch.rand(6, 3, generator=generator) < 0.6).to(DEVICE)
    other = torch.where(mask, x, 123.0)
    with torch.no_grad():
        for a, b in zip(
            module.training_terms(x, eps, mask),
            module.training_terms(other, eps, mask),
            strict=True,
        ):
            assert_array_equal(a.cpu().numpy(), b.cpu().numpy())
        _, _, squared, _ = module.training_terms(x, eps, mask)
    assert (squared[~mask] == 0).all()


def linear_vae_with_missing(observed):
    """The exact linear VAE, its encoder set to q(z|x_o) for one missing pattern.

    The encoder mean is the exact posterior mean given the observed entries;
    its scale widens the exact posterior's marginal scales (the posterior
    covariance given x_o is not diagonal), so the proposal covers it.
    Returns the module, the marginal N(b, C) of x and 4096 quasi-random draws.
    """
    module, marginal = exact_linear_gaussian_vae()
    W = module.decoder_mean.weight.detach().cpu().numpy()[observed]
    b = module.decoder_mean.bias.detach().cpu().numpy()[observed]
    M = W.T @ W + NOISE * np.eye(N_COMPONENTS)
    A = np.linalg.solve(M, W.T)
    std = 1.5 * np.sqrt(np.diag(NOISE * np.linalg.inv(M)))
    weight = np.zeros((2 * N_COMPONENTS, N_FEATURES))
    weight[:N_COMPONENTS, observed] = A
    with torch.no_grad():
        module.encoder_head.weight.copy_(torch.tensor(weight))
        raw_std = np.log(np.expm1(std - STD_FLOOR))
        module.encoder_head.bias.copy_(torch.tensor(np.concatenate([-A @ b, raw_std])))
    engine = torch.quasirandom.SobolEngine(N_COMPONENTS, scramble=True, seed=0)
    eps = torch.special.ndtri(engine.draw(4096, dtype=torch.float64))
    return module, marginal, eps.to(DEVICE)


def rows_with_missing(marginal, observed, n_rows, seed):
    x = marginal.rvs(n_rows, random_state=seed).reshape(n_rows, N_FEATURES)
    x[:, np.setdiff1d(np.arange(N_FEATURES), observed)] = np.nan
    mask = torch.tensor(~np.isnan(x), device=DEVICE)
    return x, mask, torch.tensor(np.nan_to_num(x), device=DEVICE)


@pytest.mark.parametrize("observed", [[0, 2], [1, 2, 3], [3]])
def test_importance_weights_give_the_marginal_of_the_observed_entries(observed):
    """Leaving missing entries out of p(x|z) marginalises them exactly."""
    module, marginal, eps = linear_vae_with_missing(observed)
    x, mask, filled = rows_with_missing(marginal, observed, 8, 3)
    with torch.no_grad():
        log_w = module.importance_log_weights(filled, eps, mask)
    expected = [marginal_of_observed(marginal.mean, marginal.cov, row) for row in x]
    assert_allclose(log_mean_exp(log_w, 1).cpu().numpy(), expected, atol=1e-3)


def test_conditional_mean_of_the_linear_gaussian_model():
    """Self-normalised importance sampling gives E[x_m | x_o] of the Gaussian."""
    o, m = [0, 2], [1, 3]
    module, marginal, eps = linear_vae_with_missing(o)
    # With the encoder mean at the exact posterior mean, a plain average of
    # mu(z) over the draws of q is right too. Moved 0.3 off it (in every
    # latent dimension), only the importance weights p(x_o, z) / q(z | x_o)
    # bring the estimate back: measured error 2.4e-4 with them, 0.43 with an
    # unweighted average over q.
    with torch.no_grad():
        module.encoder_head.bias[:N_COMPONENTS] += 0.3
    x, mask, filled = rows_with_missing(marginal, o, 8, 4)
    with torch.no_grad():
        imputed = module.conditional_mean(filled, eps, mask).cpu().numpy()
    mu, cov = marginal.mean, marginal.cov
    gain = cov[np.ix_(m, o)] @ np.linalg.inv(cov[np.ix_(o, o)])
    expected = mu[m] + (x[:, o] - mu[o]) @ gain.T
    assert_allclose(imputed[:, m], expected, atol=1e-3)


@pytest.mark.slow
def test_posterior_predictive_draws_have_the_conditional_moments():
    o, m = [0, 2], [1, 3]
    module, marginal, eps = linear_vae_with_missing(o)
    x, mask, filled = rows_with_missing(marginal, o, 1, 5)
    # 1024 importance draws resample as accurately as 4096 here, and 20000
    # rows of them take a seventh of the time and memory.
    eps = eps[:1024]
    n = 20000
    generator = torch.Generator().manual_seed(7)
    uniform = torch.rand(n, dtype=torch.float64, generator=generator)
    noise = torch.randn(n, N_FEATURES, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        draws = (
            module.posterior_predictive(
                filled.expand(n, -1),
                eps,
                mask.expand(n, -1),
                uniform.to(DEVICE),
                noise.to(DEVICE),
            )
            .cpu()
            .numpy()[:, m]
        )
    mu, cov = marginal.mean, marginal.cov
    gain = cov[np.ix_(m, o)] @ np.linalg.inv(cov[np.ix_(o, o)])
    mean = mu[m] + gain @ (x[0, o] - mu[o])
    conditional_cov = cov[np.ix_(m, m)] - gain @ cov[np.ix_(o, m)]
    assert_allclose(draws.mean(0), mean, atol=0.05)
    assert_allclose(np.cov(draws.T), conditional_cov, atol=0.05)


def test_variance_statistics_count_observed_entries_only():
    torch.manual_seed(0)
    module = VAEModule(3, 2, (), "identity", "feature", 1e-4).to(DEVICE)
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(50, 3, generator=generator).to(DEVICE)
    mask = (torch.rand(50, 3, generator=generator) < 0.5).to(DEVICE)
    mask[:, 2] = False
    with torch.no_grad():
        mean_squared, _ = posterior_statistics(module, x, 0, 1, mask)
        mean, std = module.encode(x, mask)
        # The draws posterior_statistics makes with seed 0.
        eps = torch.randn(
            mean.shape, generator=make_generator(0, mean.device), device=mean.device
        )
        residual = (x - module.decode(mean + std * eps)[0]) ** 2
    expected = [residual[mask[:, j], j].mean().item() for j in range(2)]
    assert_allclose(mean_squared[:2].cpu().numpy(), expected, rtol=1e-5)
    assert torch.isnan(mean_squared[2])
    # A feature without observed entries keeps its variance.
    module.variance.fill_(0.7)
    set_epoch_variance(module, mean_squared, mask.sum(0))
    assert_allclose(module.variance.cpu().numpy(), [*expected, 0.7], rtol=1e-5)
    # A shared variance pools the observed entries, as each training step's
    # optimal_variance does: features weigh by their observed counts, not
    # equally.
    module.variance_mode = "shared"
    mask[:, 1] &= torch.arange(50, device=mask.device) < 10  # feature 1: few
    with torch.no_grad():
        mean_squared, _ = posterior_statistics(module, x, 0, 1, mask)
        mean, std = module.encode(x, mask)
        residual = (x - module.decode(mean + std * eps)[0]) ** 2
    set_epoch_variance(module, mean_squared, mask.sum(0))
    pooled = residual[mask].mean().item()
    assert_allclose(module.variance.cpu().numpy(), np.full(3, pooled), rtol=1e-5)
    assert not np.isclose(pooled, np.nanmean(mean_squared.cpu().numpy()), rtol=1e-3)


# -------------------------------------------------------------- the estimator


@pytest.mark.slow
def test_marginal_likelihood_of_rows_with_missing_entries(ppca):
    """Trained on incomplete data, scores match the closed-form marginal."""
    X_train = remove_at_random(ppca.X_train, 0.2, 0)
    # A linear encoder cannot give the posterior for every missing pattern
    # (it depends on the mask multiplicatively): the default MLP can.
    vae = GaussianVAE(n_components=2, random_state=0, device=DEVICE).fit(X_train)
    assert vae.module_.mask_input
    X_test = remove_at_random(ppca.X_test, 0.3, 1)
    X_test = X_test[~np.isnan(X_test).all(1)]
    true = [marginal_of_observed(ppca.b, ppca.covariance, row) for row in X_test]
    assert abs(vae.score(X_test) - np.mean(true)) < 0.1
    # Complete rows match the full marginal, as for a model fitted on them.
    full = ppca.true_log_likelihood(ppca.X_test).mean()
    assert abs(vae.score(ppca.X_test) - full) < 0.15


def test_linear_start_on_incomplete_rows_is_the_factor_analysis_fit(ppca):
    # Two latent dimensions for five features and a per-feature variance:
    # the start is the factor analysis of EM's Gaussian, close to the true
    # model, and training (the linear encoder cannot give every pattern's
    # posterior) does not beat it. Probabilistic PCA's one noise variance
    # in standardized units started it 0.68 nats/row below the truth.
    X = remove_at_random(ppca.X_train, 0.15, 0)
    vae = GaussianVAE(
        n_components=2,
        hidden_layer_sizes=(),
        init="linear",
        early_stopping=True,
        random_state=0,
        device=DEVICE,
    ).fit(X)
    true = ppca.true_log_likelihood(ppca.X_test).mean()
    assert abs(vae.score(ppca.X_test) - true) < 0.03
    assert_allclose(vae.noise_variance_.mean(), 0.5, rtol=0.15)
    assert_allclose(vae.noise_variance_, ppca.noise_variance, rtol=0.5)
    # A shared variance keeps probabilistic PCA's: one in standardized units.
    shared = clone(vae).set_params(decoder_variance="shared").fit(X)
    internal = shared.noise_variance_ / shared.scale_**2
    assert_allclose(internal, internal[0], rtol=1e-6)


def test_gaussian_fit_on_incomplete_rows_is_the_em_estimate(ppca):
    # A Gaussian model (one latent dimension per feature, no hidden layers,
    # a linear start) fitted to incomplete rows is the maximum-likelihood
    # Gaussian of their observed entries, found by EM in closed form: no
    # epochs, and its scores are those of that Gaussian's marginals (here
    # standardized, so in the units of X less the log of the scales).
    X = remove_at_random(ppca.X_train, 0.3, 5)
    vae = GaussianVAE(
        n_components=None,
        hidden_layer_sizes=(),
        init="linear",
        prior_components=1,
        shrinkage=0.0,
        random_state=0,
        device=DEVICE,
    ).fit(X)
    assert vae.n_iter_ == 0
    standardized = (X - vae.mean_) / vae.scale_
    mean, covariance, _, _ = incomplete_gaussian(standardized, vae.min_variance)
    X_test = remove_at_random(ppca.X_test, 0.3, 6)
    X_test = X_test[~np.isnan(X_test).all(1)]
    expected = observed_log_density(
        (X_test - vae.mean_) / vae.scale_, mean, covariance
    ) - (~np.isnan(X_test) * np.log(vae.scale_)).sum(1)
    # float32 parameters.
    assert_allclose(vae.score_samples(X_test), expected, rtol=1e-5)
    # Within 0.02 nats of the true model's marginals (0.011 here); the
    # Gaussian of the rows filled with their means, whose covariance shrinks
    # by about the fraction missing, is 0.29 below.
    true = np.mean(
        [marginal_of_observed(ppca.b, ppca.covariance, row) for row in X_test]
    )
    assert abs(vae.score(X_test) - true) < 0.02
    filled = np.where(np.isnan(X), np.nanmean(X, 0), X)
    mean_filled = observed_log_density(X_test, filled.mean(0), np.cov(filled.T))
    assert mean_filled.mean() < true - 0.2


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("decoder_variance", ["feature", "heteroscedastic"])
def test_network_keeps_an_em_start_it_does_not_beat(ppca, decoder_variance):
    # On Gaussian data with missing entries the EM start is the right model;
    # a network trained from it beats it on the validation ELBO only (the
    # start's encoder is the posterior of complete rows), not on the
    # likelihood, so the start is kept: its decoder is still linear, and its
    # scores are within 0.02 nats of the true marginals (0.012 here). Before
    # (a mean-filled start, weighed by the ELBO), a network was kept, 0.19
    # below them. A variance head, trained by then, must not score the start.
    X = remove_at_random(ppca.X_train, 0.3, 5)
    vae = GaussianVAE(
        hidden_layer_sizes=(16,),
        decoder_variance=decoder_variance,
        init="linear",
        prior_components=1,
        early_stopping=True,
        max_iter=60,
        random_state=0,
        device=DEVICE,
    ).fit(X)
    assert vae.module_.has_linear_decoder
    X_test = remove_at_random(ppca.X_test, 0.3, 6)
    X_test = X_test[~np.isnan(X_test).all(1)]
    true = np.mean(
        [marginal_of_observed(ppca.b, ppca.covariance, row) for row in X_test]
    )
    assert abs(vae.score(X_test) - true) < 0.02


def test_feature_observed_only_in_held_out_rows():
    # Its one observed value falls in the rows early stopping holds out, so
    # the start sees none: it fits, with finite scores, as before EM.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    X[:, 2] = np.nan
    X[0, 2] = 1.0
    vae = GaussianVAE(
        hidden_layer_sizes=(4,),
        init="linear",
        early_stopping=True,
        max_iter=5,
        random_state=6,
        device=DEVICE,
    )
    with pytest.warns(ConvergenceWarning):
        vae.fit(X)
    assert np.isfinite(vae.score_samples(X)).all()


def test_complete_rows_score_the_same_next_to_incomplete_ones(fitted_with_nan, ppca):
    X = ppca.X_test[:10].copy()
    alone = fitted_with_nan.score_samples(X[:5])
    X[5:, 0] = np.nan
    assert_allclose(fitted_with_nan.score_samples(X)[:5], alone, rtol=1e-12)
    assert_allclose(
        fitted_with_nan.transform(X)[:5],
        fitted_with_nan.transform(X[:5]),
        rtol=1e-12,
    )


@pytest.mark.parametrize("standardize", [True, "marginal"])
@pytest.mark.parametrize("c", [4.0, 0.125])
def test_jacobian_counts_the_observed_entries(ppca, c, standardize):
    # Powers of two scale the data, the scaling and the map's knots exactly:
    # the same fit, scored in other units.
    X = remove_at_random(ppca.X_train[:300], 0.2, 2)
    params = {**SMALL, "n_components": 2, "standardize": standardize}
    vae = GaussianVAE(**params).fit(X)
    scaled = GaussianVAE(**params).fit(c * X)
    rows = X[~np.isnan(X).all(1)]
    shift = -(~np.isnan(rows)).sum(1) * np.log(c)
    assert_allclose(scaled.score_samples(c * rows), vae.score_samples(rows) + shift)


def test_mask_reaches_the_encoder_only_for_incomplete_training_data(
    fitted_with_nan, ppca
):
    n_features = ppca.X_train.shape[1]
    assert fitted_with_nan.module_.encoder_body[0].in_features == 2 * n_features
    complete = GaussianVAE(n_components=2, **{**SMALL, "max_iter": 2})
    complete.fit(ppca.X_train)
    assert not complete.module_.mask_input
    assert complete.module_.encoder_body[0].in_features == n_features
    # Without the mask input, incomplete rows still score: the encoder only
    # proposes, and importance sampling corrects for it.
    scores = complete.score_samples(remove_at_random(ppca.X_test, 0.3, 3))
    assert np.isfinite(scores).all()


def test_standardization_ignores_missing_entries(fitted_with_nan, ppca):
    X = remove_at_random(ppca.X_train, 0.2, 0)
    assert_allclose(fitted_with_nan.mean_, np.nanmean(X, 0))
    assert_allclose(fitted_with_nan.scale_, np.nanstd(X, 0))
    assert np.isfinite(fitted_with_nan.noise_variance_).all()
    assert np.isfinite(fitted_with_nan.loss_curve_).all()


def test_row_without_observed_entries(fitted_with_nan, ppca):
    """log p(nothing observed) = 0; the posterior given nothing is the prior."""
    X = ppca.X_test[:3].copy()
    X[1] = np.nan
    scores = fitted_with_nan.score_samples(X)
    assert scores[1] == 0.0 and (scores[[0, 2]] < 0).all()
    assert_array_equal(fitted_with_nan.transform(X)[1], 0.0)


def test_linear_decoder_transform_is_the_posterior_given_the_observed(ppca):
    """E[z | x_o], exactly, where the encoder (untrained on masks) sees NaN as the mean."""
    from test_estimator import linear_posterior_means

    vae = GaussianVAE(
        n_components=2, **{**SMALL, "hidden_layer_sizes": (), "max_iter": 5}
    ).fit(ppca.X_train)
    X = remove_at_random(ppca.X_test, 0.4, 5)
    X[0] = np.nan
    Z = vae.transform(X)
    assert_allclose(Z, linear_posterior_means(vae, X), rtol=1e-9, atol=1e-9)
    assert_array_equal(Z[0], 0.0)


def test_exact_posterior_mean_of_a_float32_module_is_computed_in_float64(ppca):
    # As on MPS, where the module scores in float32: the exact posterior
    # mean is then computed on the CPU in float64.
    import copy

    from skvae._inference import posterior_mean_fn

    vae = GaussianVAE(
        n_components=2, **{**SMALL, "hidden_layer_sizes": (), "max_iter": 5}
    ).fit(ppca.X_train)
    X = remove_at_random(ppca.X_test[:50], 0.3, 6)
    mask = torch.as_tensor(~np.isnan(X))
    x = torch.as_tensor(np.nan_to_num((X - vae.mean_) / vae.scale_))
    fn, _ = posterior_mean_fn(vae.module_)
    module = copy.deepcopy(vae.module_).cpu()
    with torch.no_grad():
        expected = fn(module.double(), x, mask)
        got = fn(copy.deepcopy(module).float(), x.float(), mask)
    assert got.dtype == torch.float64
    assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_wide_latent_spaces_take_the_data_space_route_with_the_same_results(
    ppca, monkeypatch
):
    # Past ROW_SYSTEMS_MAX_COMPONENTS latent dimensions (here 0, so that
    # small models show it), rows with missing entries of a linear decoder
    # go through p(x)'s components in data space: posterior means,
    # log-densities and conditional means as in latent space.
    from test_estimator import linear_posterior_means

    from skvae import _inference
    from skvae._inference import conditional_mean_fn, inference_module

    X = remove_at_random(ppca.X_test, 0.3, 7)
    X[0] = np.nan  # nothing observed: the prior's mean, and log p = 0
    gaussian = GaussianVAE(
        n_components=2, **{**SMALL, "hidden_layer_sizes": (), "max_iter": 5}
    ).fit(ppca.X_train)
    mixture = GaussianVAE(
        n_components=2,
        **{**SMALL, "hidden_layer_sizes": (), "prior_components": 3, "max_iter": 5},
    ).fit(ppca.X_train)
    assert mixture.module_.has_linear_decoder and not mixture.module_.is_gaussian
    x = torch.as_tensor(np.nan_to_num((X - mixture.mean_) / mixture.scale_))
    mask = torch.as_tensor(~np.isnan(X))

    module = inference_module(mixture.module_, torch.device("cpu"))

    def results():
        fn, _ = conditional_mean_fn(module, None)
        with torch.no_grad():
            filled = fn(module, x, mask)
        return (
            gaussian.transform(X),
            mixture.transform(X),
            mixture.score_samples(X),
            filled.numpy(),
        )

    expected = results()
    monkeypatch.setattr(_inference, "ROW_SYSTEMS_MAX_COMPONENTS", 0)
    for got, want in zip(results(), expected, strict=True):
        assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert_allclose(
        expected[0], linear_posterior_means(gaussian, X), rtol=1e-9, atol=1e-12
    )
    # The encoder's mean is another thing: the test can tell them apart.
    with torch.no_grad():
        variance = mixture.module_.variance  # the module's device and dtype
        encoded = mixture.module_.encode(x.to(variance), mask.to(variance.device))[0]
    assert np.abs(encoded.cpu().numpy() - expected[1])[1:].max() > 0.05


def test_row_without_observed_entries_gets_the_mixture_prior_mean(ppca):
    vae = GaussianVAE(
        n_components=2, **{**SMALL, "prior_components": 3, "max_iter": 5}
    ).fit(remove_at_random(ppca.X_train, 0.1, 1))
    with torch.no_grad():
        log_weights, means, _ = vae.module_.prior_mixture()
        prior_mean = (torch.exp(log_weights) @ means).double().cpu().numpy()
    assert np.abs(prior_mean).max() > 1e-3  # not 0: the test can tell them apart
    X = ppca.X_test[:3].copy()
    X[1] = np.nan
    assert_allclose(vae.transform(X)[1], prior_mean, rtol=1e-12)


def test_training_rows_without_observed_entries_are_accepted(ppca):
    X = remove_at_random(ppca.X_train[:300], 0.2, 4)
    X[:20] = np.nan
    vae = GaussianVAE(n_components=2, **{**SMALL, "max_iter": 5}).fit(X)
    assert np.isfinite(vae.loss_curve_).all()
    assert np.isfinite(vae.score_samples(X[20:])).all()


def test_feature_never_observed_is_an_error(ppca):
    X = ppca.X_train[:100].copy()
    X[:, [1, 3]] = np.nan
    with pytest.raises(ValueError, match=r"Features \[1, 3\] .* no observed value"):
        GaussianVAE(**SMALL).fit(X)


def test_partial_fit_keeps_the_variance_of_an_unobserved_feature(ppca):
    vae = GaussianVAE(n_components=2, **SMALL).partial_fit(ppca.X_train[:500])
    before = vae.noise_variance_.copy()
    chunk = ppca.X_train[500:].copy()
    chunk[:, 2] = np.nan
    vae.partial_fit(chunk)
    assert vae.noise_variance_[2] == before[2]
    assert (vae.noise_variance_[[0, 1, 3, 4]] != before[[0, 1, 3, 4]]).all()


@pytest.mark.parametrize("method", ["fit", "transform", "score_samples"])
def test_infinity_is_still_an_error(fitted_with_nan, method):
    X = np.array([[1.0, np.nan, np.inf, 0.0, 1.0], [2.0, 3.0, 4.0, 5.0, 6.0]])
    estimator = GaussianVAE(**SMALL) if method == "fit" else fitted_with_nan
    with pytest.raises(ValueError, match="infinity"):
        getattr(estimator, method)(X)


def test_tags_declare_nan_support():
    assert GaussianVAE().__sklearn_tags__().input_tags.allow_nan
