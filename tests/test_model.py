import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy import stats

from skvae._likelihood import gaussian_log_prob, log_mean_exp
from skvae._model import STD_FLOOR, VAEModule

N_FEATURES, N_COMPONENTS, NOISE = 4, 2, 0.3
GEN = torch.Generator()


def exact_linear_gaussian_vae():
    """A linear VAE whose encoder is the exact posterior of its decoder.

    With orthogonal decoder columns the posterior covariance is diagonal, so
    the encoder can represent it exactly; then every importance weight equals
    p(x), whatever the draw.
    """
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(N_FEATURES, N_COMPONENTS)))
    W = q * np.array([2.0, 0.5])
    b = rng.normal(size=N_FEATURES)
    M = W.T @ W + NOISE * np.eye(N_COMPONENTS)
    A = np.linalg.solve(M, W.T)
    post_std = np.sqrt(NOISE / np.diag(M))
    module = VAEModule(N_FEATURES, N_COMPONENTS, (), "identity", NOISE, 1e-6).double()
    with torch.no_grad():
        module.variance.fill_(NOISE)  # built in float32; exact in float64
        module.encoder_head.weight.copy_(torch.tensor(np.vstack([A, np.zeros_like(A)])))
        raw_std = np.log(np.expm1(post_std - STD_FLOOR))  # inverse softplus
        module.encoder_head.bias.copy_(torch.tensor(np.concatenate([-A @ b, raw_std])))
        module.decoder_mean.weight.copy_(torch.tensor(W))
        module.decoder_mean.bias.copy_(torch.tensor(b))
    marginal = stats.multivariate_normal(b, W @ W.T + NOISE * np.eye(N_FEATURES))
    return module, marginal


def test_importance_weights_equal_the_marginal_for_the_exact_posterior():
    module, marginal = exact_linear_gaussian_vae()
    x = np.random.default_rng(1).normal(size=(6, N_FEATURES)) * 2
    eps = torch.randn(
        5, N_COMPONENTS, dtype=torch.float64, generator=GEN.manual_seed(0)
    )
    with torch.no_grad():
        log_w = module.importance_log_weights(torch.tensor(x), eps).numpy()
    assert log_w.shape == (6, 5)
    assert_allclose(log_w, np.repeat(marginal.logpdf(x)[:, None], 5, 1), rtol=1e-10)


def test_elbo_is_below_the_marginal_for_a_wrong_posterior():
    module, marginal = exact_linear_gaussian_vae()
    with torch.no_grad():
        module.encoder_head.bias[N_COMPONENTS:] += 0.5  # too wide a posterior
    x = np.random.default_rng(2).normal(size=(50, N_FEATURES))
    eps = torch.randn(
        4000, N_COMPONENTS, dtype=torch.float64, generator=GEN.manual_seed(1)
    )
    with torch.no_grad():
        log_w = module.importance_log_weights(torch.tensor(x), eps)
    elbo = log_w.mean(1).numpy()
    iwae = log_mean_exp(log_w, 1).numpy()
    true = marginal.logpdf(x)
    assert (elbo < iwae).all()
    assert (elbo < true).all()
    assert_allclose(iwae, true, atol=0.02)


def test_training_terms_use_the_closed_form_variance():
    torch.manual_seed(0)
    module = VAEModule(3, 2, (5,), "tanh", "feature", 1e-4)
    x, eps = (
        torch.randn(32, 3, generator=GEN.manual_seed(2)),
        torch.randn(32, 2, generator=GEN),
    )
    log_px, kl, squared, variance = module.training_terms(x, eps)
    mean, std = module.encode(x)
    x_mean, _ = module.decode(mean + std * eps)
    expected = gaussian_log_prob(x, x_mean, ((x - x_mean) ** 2).mean(0).detach())
    assert_allclose(log_px.detach().numpy(), expected.detach().numpy(), rtol=1e-5)
    assert kl.shape == (32, 2) and (kl >= 0).all()
    assert_allclose(squared.numpy(), ((x - x_mean) ** 2).detach().numpy())
    assert_allclose(
        variance.numpy(), ((x - x_mean) ** 2).mean(0).detach().numpy(), rtol=1e-6
    )

    # Validation uses the stored variance, not the batch's own optimum.
    log_px_stored, _, _, _ = module.training_terms(x, eps, fit_variance=False)
    expected = gaussian_log_prob(x, x_mean, module.variance)
    assert_allclose(
        log_px_stored.detach().numpy(), expected.detach().numpy(), rtol=1e-5
    )


@pytest.mark.parametrize("variance", ["feature", "shared", "heteroscedastic", 0.5])
def test_decoder_variance_modes(variance):
    module = VAEModule(3, 2, (4,), "relu", variance, 1e-3)
    z = torch.randn(7, 2, generator=GEN.manual_seed(5))
    mean, var = module.decode(z)
    assert mean.shape == (7, 3)
    expected = 0.5 if variance == 0.5 else 1.0
    assert_allclose(var.detach().numpy(), np.full(3, expected))
    assert module.closed_form_variance == (variance != 0.5)


def test_heteroscedastic_head_starts_where_the_warmup_variance_ended():
    module = VAEModule(3, 2, (4,), "relu", "heteroscedastic", 1e-3)
    module.variance.copy_(torch.tensor([0.5, 2.0, 1e-3 + 1e-9]))
    module.activate_variance_head()
    assert not module.closed_form_variance
    _, var = module.decode(torch.randn(5, 2, generator=GEN.manual_seed(4)))
    assert var.shape == (5, 3)
    assert_allclose(var.detach().numpy(), np.tile([0.5, 2.0, 1e-3], (5, 1)), rtol=1e-5)


def test_encoder_is_finite_on_extreme_inputs():
    module = VAEModule(2, 2, (4,), "relu", "feature", 1e-3).double()
    x = torch.tensor([[1e100, -1e100], [0.0, 1e-300]], dtype=torch.float64)
    eps = torch.randn(3, 2, dtype=torch.float64, generator=GEN.manual_seed(3))
    log_w = module.importance_log_weights(x, eps)
    assert torch.isfinite(log_w).all()
    assert (log_w[0] < log_w[1]).all()
