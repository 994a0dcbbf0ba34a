import math

import numpy as np
import pytest
import torch
from conftest import conditional_means
from numpy.testing import assert_allclose
from scipy import special, stats

from skvae import _likelihood
from skvae._likelihood import (
    GaussianFactors,
    full_gaussian_log_prob,
    gaussian_conditional_mean,
    gaussian_log_prob,
    gaussian_mixture_log_prob,
    kl_between_normals,
    kl_to_standard_normal,
    linear_mixture_data_components,
    linear_mixture_factors,
    linear_mixture_log_prob,
    linear_mixture_posterior_mean,
    linear_mixture_posterior_mean_in_data_space,
    log_mean_exp,
    mixture_log_prob,
    optimal_variance,
    standard_normal_log_prob,
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_log_prob_matches_scipy(dtype):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 4)) * 1e3
    mean = rng.normal(size=(7, 4)) * 1e3
    var = rng.uniform(0.1, 1e6, size=4)
    expected = stats.norm.logpdf(x, mean, np.sqrt(var)).sum(axis=1)
    got = gaussian_log_prob(*(torch.tensor(a, dtype=dtype) for a in (x, mean, var)))
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    assert_allclose(got.numpy(), expected, rtol=rtol)


def test_gaussian_log_prob_mask_is_the_marginal_of_the_observed_entries():
    rng = np.random.default_rng(1)
    x, mean = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    var = rng.uniform(0.5, 2.0, size=(5, 6))
    mask = rng.uniform(size=(5, 6)) < 0.6
    expected = np.where(mask, stats.norm.logpdf(x, mean, np.sqrt(var)), 0.0).sum(1)
    got = gaussian_log_prob(
        torch.tensor(x), torch.tensor(mean), torch.tensor(var), torch.tensor(mask)
    )
    assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_standard_normal_log_prob_matches_scipy():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3, 5))
    assert_allclose(
        standard_normal_log_prob(torch.tensor(z)).numpy(),
        stats.norm.logpdf(z).sum(1),
        rtol=1e-12,
    )


def test_kl_matches_torch_distributions():
    rng = np.random.default_rng(3)
    mean = torch.tensor(rng.normal(size=(6, 3)) * 3)
    std = torch.tensor(rng.uniform(1e-3, 5.0, size=(6, 3)))
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, std), torch.distributions.Normal(0.0, 1.0)
    )
    assert_allclose(
        kl_to_standard_normal(mean, std).numpy(), expected.numpy(), rtol=1e-12
    )


def test_kl_is_zero_only_at_the_prior():
    assert kl_to_standard_normal(torch.zeros(3), torch.ones(3)).abs().max() == 0
    assert (kl_to_standard_normal(torch.full((3,), 0.1), torch.ones(3)) > 0).all()


@pytest.mark.parametrize("shared", [False, True])
def test_optimal_variance_maximises_the_gaussian_likelihood(shared):
    rng = np.random.default_rng(4)
    residuals = torch.tensor(rng.normal(size=(200, 3)) * [0.1, 1.0, 10.0])
    squared = residuals**2
    var = optimal_variance(squared, shared=shared, min_variance=1e-8)
    expected = squared.mean() if shared else squared.mean(0)
    assert_allclose(var.numpy(), np.broadcast_to(expected.numpy(), (3,)), rtol=1e-12)

    def log_lik(v):
        return gaussian_log_prob(residuals, torch.zeros(()), v).sum().item()

    best = log_lik(var)
    for factor in (0.9, 1.1):
        assert log_lik(var * factor) < best


def test_optimal_variance_floor_mask_and_detach():
    squared = torch.zeros(4, 2, requires_grad=True)
    var = optimal_variance(squared, shared=False, min_variance=1e-3)
    assert not var.requires_grad
    assert_allclose(var.numpy(), [1e-3, 1e-3])

    squared = torch.tensor([[1.0, 4.0], [3.0, 100.0]])
    mask = torch.tensor([[True, True], [True, False]])
    var = optimal_variance(squared, shared=False, min_variance=1e-3, mask=mask)
    assert_allclose(var.numpy(), [2.0, 4.0])
    var = optimal_variance(squared, shared=True, min_variance=1e-3, mask=mask)
    assert_allclose(var.numpy(), [8.0 / 3.0, 8.0 / 3.0])


def test_log_mean_exp_is_stable():
    w = torch.tensor([[-1e4, -1e4 + math.log(3.0)], [1e4, 1e4]], dtype=torch.float64)
    assert_allclose(log_mean_exp(w, 1).numpy(), [-1e4 + math.log(2.0), 1e4], rtol=1e-15)


def test_mixture_log_prob_matches_scipy():
    rng = np.random.default_rng(7)
    k, q = 3, 4
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(size=(k, q)) * 3
    factors = rng.normal(size=(k, q, q))
    covariances = factors @ np.swapaxes(factors, 1, 2) + 0.1 * np.eye(q)
    z = rng.normal(size=(5, 2, q)) * 4
    expected = np.log(
        sum(
            w * stats.multivariate_normal(m, c).pdf(z)
            for w, m, c in zip(weights, means, covariances, strict=True)
        )
    )
    cholesky = torch.linalg.cholesky(torch.tensor(covariances))
    args = torch.tensor(z), torch.tensor(np.log(weights)), torch.tensor(means), cholesky
    got = mixture_log_prob(*args)
    assert got.shape == (5, 2)
    assert_allclose(got.numpy(), expected, rtol=1e-10)
    # The log-determinant passed in, as the module does, gives the same; and
    # it is used: one more nat in each component's log-determinant is one
    # nat less of density.
    log_det = torch.tensor(np.linalg.slogdet(covariances)[1] / 2)
    assert_allclose(mixture_log_prob(*args, log_det).numpy(), expected, rtol=1e-10)
    assert_allclose(
        mixture_log_prob(*args, log_det + 1.0).numpy(), expected - 1.0, rtol=1e-10
    )


def test_one_component_mixture_at_the_origin_is_the_standard_normal():
    z = torch.tensor(np.random.default_rng(8).normal(size=(6, 3)))
    got = mixture_log_prob(
        z,
        torch.zeros(1, dtype=z.dtype),
        torch.zeros(1, 3, dtype=z.dtype),
        torch.eye(3, dtype=z.dtype)[None],
    )
    assert_allclose(got.numpy(), standard_normal_log_prob(z).numpy(), rtol=1e-12)


def test_kl_between_normals_matches_torch_distributions():
    rng = np.random.default_rng(9)
    mean, prior_mean = (torch.tensor(rng.normal(size=(4, 3))) for _ in range(2))
    std = torch.tensor(rng.uniform(0.1, 3.0, size=(4, 3)))
    prior_var = torch.tensor(rng.uniform(0.1, 3.0, size=(4, 3)))
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, std),
        torch.distributions.Normal(prior_mean, prior_var.sqrt()),
    )
    got = kl_between_normals(mean, std, prior_mean, prior_var)
    assert_allclose(got.numpy(), expected.numpy(), rtol=1e-10)
    standard = kl_between_normals(mean, std, 0.0, torch.ones(()))
    assert_allclose(standard.numpy(), kl_to_standard_normal(mean, std).numpy())


@pytest.mark.parametrize("noise", [0.1, 1e-6])
def test_full_gaussian_log_prob_matches_scipy_with_and_without_missing_entries(
    noise, monkeypatch
):
    # noise=1e-6: a covariance of rank 2 plus a little noise, ill-conditioned
    # as a factor model with a small noise variance is.
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 2 if noise < 0.01 else 6))
    covariance, mean = A @ A.T + noise * np.eye(6), rng.normal(size=6)
    x = rng.normal(size=(60, 6))
    if noise < 0.01:
        x = mean + rng.normal(size=(60, 2)) @ A.T + np.sqrt(noise) * x
    mask = rng.random((60, 6)) > 0.3
    rtol = 1e-10 if noise > 0.01 else 1e-8  # scipy's digits too
    mask[0] = False  # nothing observed: log-probability 0
    args = [torch.as_tensor(a) for a in (x, mean, covariance)]
    assert_allclose(
        full_gaussian_log_prob(*args).numpy(),
        stats.multivariate_normal(mean, covariance).logpdf(x),
        rtol=rtol,
    )
    out = full_gaussian_log_prob(*args, torch.as_tensor(mask)).numpy()
    expected = [
        stats.multivariate_normal(mean[o], covariance[np.ix_(o, o)]).logpdf(row[o])
        if o.any()
        else 0.0
        for row, o in zip(x, mask, strict=True)
    ]
    assert_allclose(out, expected, rtol=rtol)
    # The whole covariance's factors, where the caller keeps them, serve the
    # complete rows, and the rows with at most half their entries missing
    # through the precision matrix (an m x m block of it per pattern, in one
    # batched call for all the patterns that miss m entries); the others
    # still get their own.
    n_missing = (~mask).sum(1)
    assert {0, 1, 3} <= set(n_missing) and n_missing.max() > 3
    factors = GaussianFactors(args[2])
    assert factors.precision is not None
    through_precision, cholesky_ex = [], torch.linalg.cholesky_ex

    def spy(matrix):
        through_precision.append(tuple(matrix.shape))
        return cholesky_ex(matrix)

    monkeypatch.setattr(torch.linalg, "cholesky_ex", spy)
    given = full_gaussian_log_prob(*args, torch.as_tensor(mask), factors).numpy()
    assert_allclose(given, expected, rtol=rtol)
    counts = n_missing[(n_missing > 0) & (n_missing <= 3)]
    assert sorted(shape[1:] for shape in through_precision) == [
        (m, m) for m in sorted(set(counts))
    ]
    patterns = {tuple(row) for row in ~mask if 0 < row.sum() <= 3}
    assert len(patterns) < len(counts)  # rows share patterns
    assert sum(shape[0] for shape in through_precision) == len(patterns)
    # Where no row may go through it, the precision is never computed.
    heavy = torch.as_tensor(mask | (n_missing[:, None] <= 3))
    fresh = GaussianFactors(args[2])
    full_gaussian_log_prob(*args, heavy, fresh)
    assert not heavy.all() and "precision" not in vars(fresh)
    # Where a block of P rounds to indefinite, the row's own factor.
    monkeypatch.setattr(
        torch.linalg,
        "cholesky_ex",
        lambda matrix: (matrix, torch.ones(matrix.shape[:-2], dtype=torch.int32)),
    )
    fallback = full_gaussian_log_prob(*args, torch.as_tensor(mask), factors).numpy()
    assert_allclose(fallback, expected, rtol=rtol)


def test_an_ill_conditioned_gaussian_scores_each_pattern_by_its_own_factor():
    # Through the precision matrix, rows with missing entries would lose
    # digits with the condition number; past MAX_PRECISION_CONDITION each
    # pattern gets its own factor, as without the whole covariance's.
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 2))
    covariance = A @ A.T + 1e-12 * np.eye(6)
    x = rng.normal(size=(40, 2)) @ A.T + 1e-6 * rng.normal(size=(40, 6))
    mask = torch.as_tensor(rng.random((40, 6)) > 0.2)
    args = [torch.as_tensor(a) for a in (x, np.zeros(6), covariance)]
    factors = GaussianFactors(args[2])
    assert factors.precision is None
    assert torch.equal(
        full_gaussian_log_prob(*args, mask, factors),
        full_gaussian_log_prob(*args, mask),
    )


def _linear_mixture(q, n_features=6, k=3, seed=0):
    """Parameters of a linear decoder with a K-component prior, and its p(x)."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(n_features, q)) * [3.0] * q
    bias = rng.normal(size=n_features) * 10
    variance = rng.uniform(1e-3, 2.0, size=n_features)
    log_weights = np.log(rng.dirichlet(np.ones(k)))
    means = rng.normal(size=(k, q)) * 2
    cholesky = np.tril(rng.normal(size=(k, q, q)) * 0.5, -1)
    cholesky += np.stack([np.diag(d) for d in rng.uniform(0.05, 2.0, size=(k, q))])
    components = [
        (means[j] @ weight.T + bias, weight @ c @ c.T @ weight.T + np.diag(variance))
        for j, c in enumerate(cholesky)
    ]

    def marginal(x, observed):
        return special.logsumexp(
            [
                w
                + stats.multivariate_normal(
                    m[observed], S[np.ix_(observed, observed)]
                ).logpdf(x[observed])
                for w, (m, S) in zip(log_weights, components, strict=True)
            ]
        )

    args = weight, bias, variance, log_weights, means, cholesky
    return [torch.as_tensor(a) for a in args], marginal


@pytest.fixture(params=["default", "row systems", "patterns", "small batches"])
def incomplete_route(request, monkeypatch):
    """How rows with missing entries are solved.

    As by default (the rows of a pattern 16 rows share a pattern at a time,
    the others row by row); all row by row, batched; all a pattern at a
    time; or row by row in batches of a few rows.
    """
    if request.param == "default":
        return request.param
    by_pattern = request.param == "patterns"
    monkeypatch.setattr(
        _likelihood, "ROW_SYSTEMS_MAX_COMPONENTS", 0 if by_pattern else 64
    )
    monkeypatch.setattr(_likelihood, "SHARED_PATTERN_ROWS", 1 if by_pattern else 10**9)
    if request.param == "small batches":
        monkeypatch.setattr(_likelihood, "_GROUP_ELEMENTS", 50)
    return request.param


@pytest.mark.parametrize("q", [1, 3, 6])
def test_linear_mixture_log_prob_is_the_data_space_mixture(q, incomplete_route):
    """p(x) = sum_k pi_k N(A m_k + c, A S_k A^T + Psi), against scipy, also for x_o."""
    args, marginal = _linear_mixture(q)
    rng = np.random.default_rng(1)
    x = args[1].numpy() + rng.normal(size=(40, 6)) * 5
    mask = rng.random((40, 6)) > 0.3
    mask[0], mask[1] = False, True  # nothing observed: 0; everything
    mask[2:20] = [True, False, True, True, False, True]  # a shared pattern
    complete = np.ones(6, dtype=bool)
    got = linear_mixture_log_prob(torch.as_tensor(x), *args).numpy()
    assert_allclose(got, [marginal(row, complete) for row in x], rtol=1e-10)
    got = linear_mixture_log_prob(
        torch.as_tensor(x), *args, mask=torch.as_tensor(mask)
    ).numpy()
    expected = [
        marginal(r, o) if o.any() else 0.0 for r, o in zip(x, mask, strict=True)
    ]
    assert_allclose(got, expected, rtol=1e-10)
    # The same mixture through its components in data space.
    weight, bias, variance, log_weights, means, cholesky = args
    components = linear_mixture_data_components(weight, bias, variance, means, cholesky)
    through_data = gaussian_mixture_log_prob(
        torch.as_tensor(x), log_weights, components, torch.as_tensor(mask)
    )
    assert_allclose(through_data.numpy(), expected, rtol=1e-10)


def test_gaussian_conditional_mean_is_gaussian_conditioning():
    """mu_m + S_mo S_oo^-1 (x_o - mu_o), through P or through S_oo alike."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(8, 8))
    covariance = A @ A.T + 0.1 * np.eye(8)
    mean = rng.normal(size=8)
    x = mean + rng.normal(size=(60, 8)) @ A.T
    mask = rng.random((60, 8)) > 0.3
    mask[0], mask[1] = False, True  # nothing observed: the mean; everything
    mask[2:6] = rng.random((4, 8)) > 0.8  # mostly missing: through S_oo
    expected = conditional_means(mean, covariance, np.where(mask, x, np.nan))
    t = [torch.as_tensor(a) for a in (np.where(mask, x, 0.0), mean, covariance)]
    factors = GaussianFactors(t[2])
    got = gaussian_conditional_mean(*t, torch.as_tensor(mask), factors).numpy()
    assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    # Where some rows' blocks of P round to indefinite, those rows go through
    # S_oo, the others through P: the same means.
    cholesky_ex = torch.linalg.cholesky_ex

    def every_other_fails(matrix):
        inner, info = cholesky_ex(matrix)
        info[::2] = 1
        return inner, info

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.linalg, "cholesky_ex", every_other_fails)
        got = gaussian_conditional_mean(*t, torch.as_tensor(mask), factors).numpy()
    assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    # Without the precision route (too ill-conditioned), the same means.
    factors.precision = None
    got = gaussian_conditional_mean(*t, torch.as_tensor(mask), factors).numpy()
    assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("q", [1, 3, 6])
def test_linear_mixture_posterior_mean_is_the_mixture_posterior(q, incomplete_route):
    """E[z | x_o] = sum_k r_k (m_k + S_k A_o^T C_k^-1 (x_o - A_o m_k - c_o)).

    With C_k = A_o S_k A_o^T + Psi_o and r_k the posterior probability of
    component k, by Gaussian conditioning in data space, against the
    function's latent-space formula.
    """
    args, _ = _linear_mixture(q)
    weight, bias, variance, log_weights, means, cholesky = (a.numpy() for a in args)
    rng = np.random.default_rng(1)
    x = bias + rng.normal(size=(40, 6)) * 5
    mask = rng.random((40, 6)) > 0.3
    mask[0], mask[1] = False, True  # nothing observed: the prior's mean; everything
    mask[2:20] = [True, False, True, True, False, True]  # a shared pattern
    expected = []
    for row, o in zip(x, mask, strict=True):
        log_r, posterior = [], []
        for w, m, c in zip(log_weights, means, cholesky, strict=True):
            S = c @ c.T
            A = weight[o]
            C = A @ S @ A.T + np.diag(variance[o])
            residual = row[o] - A @ m - bias[o]
            log_r.append(
                w + stats.multivariate_normal(np.zeros(o.sum()), C).logpdf(residual)
                if o.any()
                else w
            )
            posterior.append(m + S @ A.T @ np.linalg.solve(C, residual))
        r = np.exp(np.array(log_r) - special.logsumexp(log_r))
        expected.append(r @ np.array(posterior))
    got = linear_mixture_posterior_mean(
        torch.as_tensor(x), *args, mask=torch.as_tensor(mask)
    ).numpy()
    assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert_allclose(got[0], np.exp(log_weights) @ means, rtol=1e-12)
    components = linear_mixture_data_components(*args[:3], *args[4:])
    through_data = linear_mixture_posterior_mean_in_data_space(
        torch.as_tensor(x), *args[:1], *args[3:], components, torch.as_tensor(mask)
    ).numpy()
    assert_allclose(through_data, expected, rtol=1e-9, atol=1e-12)
    complete = linear_mixture_posterior_mean(torch.as_tensor(x[1:2]), *args).numpy()
    assert_allclose(complete[0], got[1], rtol=1e-12)


def test_data_space_route_of_the_standard_normal_prior_is_its_gaussian():
    """Without prior means, one component: N(c, A A^T + Psi), and its posterior."""
    args, _ = _linear_mixture(4, n_features=7, k=1)
    weight, bias, variance = args[:3]
    q = weight.shape[1]
    ((mean, covariance, factors),) = linear_mixture_data_components(
        weight, bias, variance
    )
    assert torch.equal(mean, bias)
    assert_allclose(
        covariance.numpy(), (weight @ weight.T + torch.diag(variance)).numpy()
    )
    rng = np.random.default_rng(4)
    x = torch.as_tensor(bias.numpy() + rng.normal(size=(30, 7)) * 3)
    mask = torch.as_tensor(rng.random((30, 7)) > 0.4)
    standard = (
        torch.zeros(1).double(),
        torch.zeros(1, q).double(),
        torch.eye(q).double().unsqueeze(0),
    )
    assert_allclose(
        linear_mixture_posterior_mean_in_data_space(
            x, weight, *standard, [(mean, covariance, factors)], mask
        ).numpy(),
        linear_mixture_posterior_mean(x, *args[:3], *standard, mask).numpy(),
        rtol=1e-9,
        atol=1e-12,
    )


def test_linear_mixture_log_prob_uses_given_factors_for_complete_rows_only(
    incomplete_route,
):
    args, _ = _linear_mixture(3)
    weight, _, variance, _, _, cholesky = args
    x = torch.as_tensor(np.random.default_rng(2).normal(size=(20, 6)) * 5)
    mask = torch.ones(20, 6, dtype=torch.bool)
    mask[:5, 2] = False
    factors = linear_mixture_factors(weight, variance, cholesky)
    plain = linear_mixture_log_prob(x, *args, mask=mask)
    assert_allclose(
        linear_mixture_log_prob(x, *args, mask=mask, factors=factors).numpy(),
        plain.numpy(),
        rtol=1e-12,
    )
    # Factors of another model change the complete rows, not the others.
    other = linear_mixture_factors(2 * weight, variance, cholesky)
    moved = linear_mixture_log_prob(x, *args, mask=mask, factors=other)
    assert_allclose(moved[:5].numpy(), plain[:5].numpy(), rtol=1e-12)
    assert (moved[5:] != plain[5:]).all()


def test_gaussian_routes_agree_with_scipy_and_conditioning(incomplete_route):
    """Log-densities, conditional means and draws, on every route alike."""
    rng = np.random.default_rng(3)
    A = rng.normal(size=(7, 7))
    covariance, mean = A @ A.T + 0.2 * np.eye(7), rng.normal(size=7)
    x = mean + rng.normal(size=(80, 7)) @ A.T
    mask = rng.random((80, 7)) > 0.35
    mask[:20] = [True, False, True, True, True, True, True]  # a shared pattern
    mask[20] = False
    mask[21] = True
    t = [torch.as_tensor(a) for a in (np.where(mask, x, 0.0), mean, covariance)]
    m = torch.as_tensor(mask)
    factors = GaussianFactors(t[2])
    expected = [
        stats.multivariate_normal(mean[o], covariance[np.ix_(o, o)]).logpdf(row[o])
        if o.any()
        else 0.0
        for row, o in zip(x, mask, strict=True)
    ]
    assert_allclose(
        full_gaussian_log_prob(*t, m, factors).numpy(), expected, rtol=1e-10
    )
    assert_allclose(full_gaussian_log_prob(*t, m).numpy(), expected, rtol=1e-10)
    # Where some rows' blocks of P round to indefinite: their own factors.
    cholesky_ex = torch.linalg.cholesky_ex

    def every_other_fails(matrix):
        inner, info = cholesky_ex(matrix)
        if info.dim():  # a batch of rows
            info[::2] = 1
            return inner, info
        return inner, torch.ones_like(info)  # one pattern's block

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.linalg, "cholesky_ex", every_other_fails)
        fallback = full_gaussian_log_prob(*t, m, factors).numpy()
    assert_allclose(fallback, expected, rtol=1e-10)
    incomplete = np.where(mask, x, np.nan)
    means = conditional_means(mean, covariance, incomplete)
    assert_allclose(
        gaussian_conditional_mean(*t, m, factors).numpy(), means, rtol=1e-10, atol=1e-10
    )
    # Draws: the conditional mean plus S e, with S S^T the conditional
    # covariance: C^-T for the Cholesky factor C of P_mm (at most half
    # missing), the symmetric square root otherwise.
    noise = rng.normal(size=x.shape)
    drawn = gaussian_conditional_mean(*t, m, factors, torch.as_tensor(noise)).numpy()
    precision = np.linalg.inv(covariance)
    for i, o in enumerate(mask):
        miss = ~o
        if not miss.any():
            continue
        if not o.any():
            conditional = covariance
        else:
            conditional = covariance[np.ix_(miss, miss)] - covariance[
                np.ix_(miss, o)
            ] @ np.linalg.solve(covariance[np.ix_(o, o)], covariance[np.ix_(o, miss)])
        if 0 < miss.sum() <= o.sum():
            root = np.linalg.inv(np.linalg.cholesky(precision[np.ix_(miss, miss)])).T
        else:
            values, vectors = np.linalg.eigh(conditional)
            root = vectors * np.sqrt(np.maximum(values, 0)) @ vectors.T
        assert_allclose(root @ root.T, conditional, rtol=1e-8, atol=1e-10)
        assert_allclose(
            drawn[i, miss], means[i, miss] + root @ noise[i, miss], rtol=1e-8, atol=1e-9
        )
