import numpy as np
import pytest
import torch
from conftest import DEVICE, N_COMPONENTS, N_FEATURES, exact_linear_gaussian_vae
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats

from skvae import _inference
from skvae._inference import importance_draws, log_likelihood
from skvae._likelihood import gaussian_log_prob, log_mean_exp
from skvae._linear_start import LinearStart
from skvae._model import VAEModule


def test_importance_weights_equal_the_marginal_for_the_exact_posterior():
    module, marginal = exact_linear_gaussian_vae()
    x = np.random.default_rng(1).normal(size=(6, N_FEATURES)) * 2
    generator = torch.Generator().manual_seed(0)
    eps = torch.randn(5, N_COMPONENTS, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        log_w = (
            module.importance_log_weights(
                torch.tensor(x, device=DEVICE), eps.to(DEVICE)
            )
            .cpu()
            .numpy()
        )
    assert log_w.shape == (6, 5)
    assert_allclose(log_w, np.repeat(marginal.logpdf(x)[:, None], 5, 1), rtol=1e-10)


def test_elbo_is_below_the_marginal_for_a_wrong_posterior():
    module, marginal = exact_linear_gaussian_vae()
    with torch.no_grad():
        module.encoder_head.bias[N_COMPONENTS:] += 0.5  # too wide a posterior
    x = np.random.default_rng(2).normal(size=(50, N_FEATURES))
    generator = torch.Generator().manual_seed(1)
    eps = torch.randn(4000, N_COMPONENTS, dtype=torch.float64, generator=generator)
    with torch.no_grad():
        log_w = module.importance_log_weights(
            torch.tensor(x, device=DEVICE), eps.to(DEVICE)
        ).cpu()
    elbo = log_w.mean(1).numpy()
    iwae = log_mean_exp(log_w, 1).numpy()
    true = marginal.logpdf(x)
    assert (elbo < iwae).all()
    assert (elbo < true).all()
    assert_allclose(iwae, true, atol=0.02)


@pytest.mark.parametrize("mode", ["feature", "shared"])
def test_training_terms_use_the_closed_form_variance(mode):
    torch.manual_seed(0)
    module = VAEModule(3, 2, (5,), "tanh", mode, 1e-4).to(DEVICE)
    generator = torch.Generator().manual_seed(2)
    # Features on different scales, so that one variance per feature and
    # one shared by all of them differ.
    scales = torch.tensor([0.1, 1.0, 10.0])
    x = (torch.randn(32, 3, generator=generator) * scales).to(DEVICE)
    eps = torch.randn(32, 2, generator=generator).to(DEVICE)
    log_px, kl, squared, variance = module.training_terms(x, eps)
    mean, std = module.encode(x)
    x_mean, _ = module.decode(mean + std * eps)
    optimum = ((x - x_mean) ** 2).mean(0).detach()
    if mode == "shared":
        optimum = optimum.mean().expand(3)
    expected = gaussian_log_prob(x, x_mean, optimum)
    assert_allclose(
        log_px.detach().cpu().numpy(), expected.detach().cpu().numpy(), rtol=1e-5
    )
    assert kl.shape == (32, 2) and (kl >= 0).all()
    assert_allclose(squared.cpu().numpy(), ((x - x_mean) ** 2).detach().cpu().numpy())
    assert_allclose(
        np.broadcast_to(variance.cpu().numpy(), (3,)),
        optimum.cpu().numpy(),
        rtol=1e-6,
    )

    # Validation uses the stored variance, not the batch's own optimum.
    log_px_stored, _, _, _ = module.training_terms(x, eps, fit_variance=False)
    expected = gaussian_log_prob(x, x_mean, module.variance)
    assert_allclose(
        log_px_stored.detach().cpu().numpy(), expected.detach().cpu().numpy(), rtol=1e-5
    )


@pytest.mark.parametrize("fit_variance", [True, False])
def test_training_terms_keep_a_fixed_variance(fit_variance):
    # decoder_variance=0.5 is the plain MSE VAE: training scores every batch
    # with variance 0.5 exactly (validation too), not with the batch's
    # closed-form optimum, here (0.11, 0.98, 77) per feature; with that one,
    # log p(x|z) moved by up to 261 nats a row.
    torch.manual_seed(0)
    module = VAEModule(3, 2, (5,), "tanh", 0.5, 1e-4).to(DEVICE)
    generator = torch.Generator().manual_seed(2)
    scales = torch.tensor([0.1, 1.0, 10.0])
    x = (torch.randn(32, 3, generator=generator) * scales).to(DEVICE)
    eps = torch.randn(32, 2, generator=generator).to(DEVICE)
    log_px, _, _, variance = module.training_terms(x, eps, fit_variance=fit_variance)
    with torch.no_grad():
        mean, std = module.encode(x)
        x_mean = module.decode(mean + std * eps)[0].cpu().numpy()
    expected = stats.norm.logpdf(x.cpu().numpy(), x_mean, np.sqrt(0.5)).sum(1)
    assert_allclose(log_px.detach().cpu().numpy(), expected, rtol=1e-5)
    assert_allclose(np.broadcast_to(variance.cpu().numpy(), (3,)), np.full(3, 0.5))


@pytest.mark.parametrize("variance", ["feature", "shared", "heteroscedastic", 0.5])
def test_decoder_variance_modes(variance):
    module = VAEModule(3, 2, (4,), "relu", variance, 1e-3).to(DEVICE)
    z = torch.randn(7, 2, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    mean, var = module.decode(z)
    assert mean.shape == (7, 3)
    expected = 0.5 if variance == 0.5 else 1.0
    assert_allclose(var.detach().cpu().numpy(), np.full(3, expected))
    assert module.closed_form_variance == (variance != 0.5)


def test_heteroscedastic_head_starts_where_the_warmup_variance_ended():
    module = VAEModule(3, 2, (4,), "relu", "heteroscedastic", 1e-3).to(DEVICE)
    module.variance.copy_(torch.tensor([0.5, 2.0, 1e-3 + 1e-9]))
    module.activate_variance_head()
    assert not module.closed_form_variance
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    _, var = module.decode(z)
    assert var.shape == (5, 3)
    assert_allclose(
        var.detach().cpu().numpy(), np.tile([0.5, 2.0, 1e-3], (5, 1)), rtol=1e-5
    )


def test_encoder_is_finite_on_extreme_inputs():
    module = VAEModule(2, 2, (4,), "relu", "feature", 1e-3).double().to(DEVICE)
    x = torch.tensor([[1e100, -1e100], [0.0, 1e-300]], dtype=torch.float64)
    generator = torch.Generator().manual_seed(3)
    eps = torch.randn(3, 2, dtype=torch.float64, generator=generator)
    x, eps = x.to(DEVICE), eps.to(DEVICE)
    log_w = module.importance_log_weights(x, eps)
    assert torch.isfinite(log_w).all()
    assert (log_w[0] < log_w[1]).all()


def test_a_random_mixture_prior_has_distinct_components():
    torch.manual_seed(0)
    module = VAEModule(3, 2, (4,), "relu", "feature", 1e-3, prior_components=3)
    means = module.prior_means.detach()
    assert torch.cdist(means, means).add(torch.eye(3)).min() > 0.01
    weights_mean, variance = module.prior_moments()
    assert torch.isfinite(weights_mean).all() and (variance > 0).all()


def _random_mixture_prior(seed=0):
    """A module whose 3-component prior has full covariances and unequal weights."""
    torch.manual_seed(seed)
    module = VAEModule(3, 2, (4,), "tanh", "feature", 1e-3, prior_components=3)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.prior_logits.copy_(torch.tensor([0.0, 1.0, -0.5]))
        module.prior_tril.copy_(torch.randn(3, 2, 2, generator=generator))
        module.prior_log_diag.copy_(0.5 * torch.randn(3, 2, generator=generator))
    module = module.double()
    weights = torch.softmax(module.prior_logits, 0).detach().numpy()
    means = module.prior_means.detach().numpy()
    cholesky = module.prior_cholesky().detach().numpy()
    covariances = cholesky @ cholesky.transpose(0, 2, 1)
    return module, weights, means, covariances


def test_the_mixture_prior_kl_is_log_q_minus_the_mixture_log_density():
    # No closed form under a mixture: the single-draw estimate at the z of
    # the reconstruction term, log N(z; m, s^2) - log sum_k pi_k N(z; mu_k, S_k).
    module, weights, means, covariances = _random_mixture_prior()
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(16, 3, generator=generator, dtype=torch.float64)
    eps = torch.randn(16, 2, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        _, kl, _, _ = module.training_terms(x, eps)
        mean, std = (t.numpy() for t in module.encode(x))
    z = mean + std * eps.numpy()
    log_q = stats.norm.logpdf(z, mean, std).sum(1)
    log_prior = np.log(
        sum(
            w * stats.multivariate_normal(m, c).pdf(z)
            for w, m, c in zip(weights, means, covariances, strict=True)
        )
    )
    assert kl.shape == (16, 1)
    assert_allclose(kl[:, 0].numpy(), log_q - log_prior, rtol=1e-10)


def test_the_mixture_prior_moments_are_the_mixture_mean_and_variance():
    module, weights, means, covariances = _random_mixture_prior(seed=1)
    mean = weights @ means
    variances = np.diagonal(covariances, 0, 1, 2)
    second = weights @ (variances + means**2)
    with torch.no_grad():
        got_mean, got_variance = (t.numpy() for t in module.prior_moments())
    assert_allclose(got_mean, mean, rtol=1e-12)
    assert_allclose(got_variance, second - mean**2, rtol=1e-12)


def test_widest_layer_counts_the_values_of_the_mixture_prior():
    # Scoring chunks rows by draws x this width: a mixture prior expands each
    # draw to components x latent dimensions values, a wider "layer" than
    # the network's own when the components are many (an averaged prior).
    assert VAEModule(3, 2, (4,), "relu", "feature", 1e-3).widest_layer == 4
    mixture = VAEModule(3, 2, (4,), "relu", "feature", 1e-3, prior_components=30)
    assert mixture.widest_layer == 60


@pytest.mark.parametrize("device", sorted({"cpu", DEVICE}))
def test_scoring_chunks_are_bounded_by_device(monkeypatch, device):
    # On the CPU the chunk's tensors count against the process's memory, so
    # they are smaller there than on an accelerator; each row's result is the
    # same in any chunk.
    module = VAEModule(3, 2, (4,), "relu", "feature", 1e-3).to(device)
    X = np.random.default_rng(0).normal(size=(50, 3))
    monkeypatch.setattr(_inference, "CPU_SCORE_CHUNK_ELEMENTS", 7 * 10)
    monkeypatch.setattr(_inference, "SCORE_CHUNK_ELEMENTS", 11 * 10)
    sizes = []

    def fn(module, x, mask):
        sizes.append(x.shape[0])
        return module.encoder_body(x).sum(1)

    chunked = _inference.map_rows(module, X, fn, device=torch.device(device), width=10)
    assert max(sizes) == (7 if device == "cpu" else 11) and sum(sizes) == 50
    monkeypatch.setattr(_inference, "CPU_SCORE_CHUNK_ELEMENTS", 10**9)
    monkeypatch.setattr(_inference, "SCORE_CHUNK_ELEMENTS", 10**9)
    whole = _inference.map_rows(module, X, fn, device=torch.device(device), width=10)
    assert chunked.dtype == np.float64 and chunked.shape == (50,)
    assert_allclose(chunked, whole, rtol=1e-12, atol=1e-12)


def test_a_gaussian_is_factorized_once_for_all_chunks(monkeypatch):
    # The exact Gaussian's Cholesky factor costs D^3: computed per chunk it
    # would dominate the scoring of wide data.
    from skvae import VAEOutlierDetector

    X = np.random.default_rng(0).normal(size=(200, 5))
    detector = VAEOutlierDetector(device="cpu").fit(X)
    expected = detector.score_samples(X)
    monkeypatch.setattr(_inference, "CPU_SCORE_CHUNK_ELEMENTS", 30 * 5)
    calls, cholesky = [], torch.linalg.cholesky

    def counted(matrix):
        calls.append(matrix.shape)
        return cholesky(matrix)

    monkeypatch.setattr(torch.linalg, "cholesky", counted)
    assert_allclose(detector.score_samples(X), expected, rtol=1e-12)
    assert calls == [(5, 5)]  # one factor for 7 chunks
    # With a missing entry in every chunk: one precision matrix, too, and no
    # factor of a pattern's own (one entry missing of five). score is the
    # log-likelihood of the observed entries (score_samples ranks incomplete
    # rows by their tail instead).
    X[::20, 2] = np.nan
    inverses, cholesky_inverse = [], torch.cholesky_inverse
    monkeypatch.setattr(
        torch,
        "cholesky_inverse",
        lambda factor: inverses.append(1) or cholesky_inverse(factor),
    )
    calls.clear()
    detector.score(X)
    assert calls == [(5, 5)] and inverses == [1]


def test_a_linear_start_with_hidden_layers_has_a_linear_decoder():
    """Hidden layers whose output weights are zero add nothing: p(x) is exact.

    With the N(0, I) prior, p(x) is N(c, A A^T + Psi), scored without draws
    (its one-component mixture); a hidden layer that contributes, or a
    variance that depends on z, makes the decoder nonlinear.
    """
    rng = np.random.default_rng(0)
    n, q = N_FEATURES, N_COMPONENTS
    # Values a float32 module holds exactly.
    weight, bias, noise = (
        a.astype(np.float32).astype(float)
        for a in (rng.normal(size=(n, q)), rng.normal(size=n), rng.uniform(0.1, 1, n))
    )
    start = LinearStart(
        decoder_weight=weight,
        decoder_bias=bias,
        encoder_weight=rng.normal(size=(q, n)),  # not the posterior: no matter
        encoder_bias=np.zeros(q),
        posterior_std=np.ones(q),
        noise_variance=noise,
    )
    for mode in ("feature", "heteroscedastic"):
        torch.manual_seed(0)
        module = VAEModule(n, q, (5,), "tanh", mode, 1e-6, linear_path=True)
        module.double().initialize_linear(start)
        module.to(DEVICE)
        assert module.has_linear_decoder
    x = rng.normal(size=(30, n)) * 2 + bias

    def with_one_and_64_draws(dtype):
        return [
            log_likelihood(
                module,
                x,
                mean=np.zeros(n),
                scale=np.ones(n),
                draws=importance_draws(q, k, 0, DEVICE, dtype),
                device=torch.device(DEVICE),
            )
            for k in (1, 64)
        ]

    one, many = with_one_and_64_draws(torch.float64)
    marginal = stats.multivariate_normal(bias, weight @ weight.T + np.diag(noise))
    assert_allclose(one, marginal.logpdf(x), rtol=1e-10)
    assert_array_equal(one, many)
    # Where scores are computed in float32 (MPS), the latent-space formula
    # would cancel most of its digits: it runs on the CPU in float64, on the
    # rows rounded to float32, without draws.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_inference, "inference_dtype", lambda device: torch.float32)
        one, many = with_one_and_64_draws(torch.float32)
    assert_array_equal(one, many)
    assert_allclose(one, marginal.logpdf(x), rtol=1e-6)
    module.activate_variance_head()
    assert not module.has_linear_decoder
    module = VAEModule(n, q, (5,), "tanh", "feature", 1e-6, linear_path=True)
    module.initialize_linear(start)
    with torch.no_grad():
        module.decoder_mean.weight[0, 0] = 1e-3
    assert not module.has_linear_decoder


def test_linear_start_sets_any_posterior_std_in_float32():
    # The encoder's std is softplus(bias) + STD_FLOOR: the start inverts
    # softplus, which as log(expm1(y)) overflows in float32 past y = 88 (a
    # start on unstandardized data of scale 1e6 reached 257).
    q = 5
    posterior_std = np.array([2e-4, 0.5, 3.0, 100.0, 257.0])
    start = LinearStart(
        decoder_weight=np.ones((N_FEATURES, q)),
        decoder_bias=np.zeros(N_FEATURES),
        encoder_weight=np.zeros((q, N_FEATURES)),
        encoder_bias=np.zeros(q),
        posterior_std=posterior_std,
        noise_variance=np.ones(N_FEATURES),
    )
    module = VAEModule(N_FEATURES, q, (5,), "tanh", "feature", 1e-6, linear_path=True)
    module.initialize_linear(start)
    with torch.no_grad():
        _, std = module.encode(torch.zeros(1, N_FEATURES))
    assert_allclose(std[0].numpy(), posterior_std, rtol=1e-5)


def test_importance_draws_past_the_sobol_engines_dimensions():
    # SobolEngine stops at 21,201 dimensions: beyond, seeded pseudo-random
    # draws, the same for the same seed, standard normal.
    q = torch.quasirandom.SobolEngine.MAXDIM + 1
    eps = importance_draws(q, 64, 3, "cpu", torch.float64)
    assert eps.shape == (64, q)
    assert_array_equal(eps, importance_draws(q, 64, 3, "cpu", torch.float64))
    assert not torch.equal(eps, importance_draws(q, 64, 4, "cpu", torch.float64))
    assert abs(float(eps.mean())) < 0.01 and abs(float(eps.std()) - 1) < 0.01
