import numpy as np
import pytest
from conftest import conditional_means, remove_at_random
from numpy.testing import assert_allclose
from scipy.stats import chi2, multivariate_normal

from skvae._incomplete import (
    EM_ROWS,
    em_iterations,
    filled_rows,
    incomplete_gaussian,
    observed_log_density,
    observed_mahalanobis,
    tail_equivalent_distance,
)


def correlated_gaussian(n_samples, n_features, seed):
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(n_features, n_features))
    covariance = factor @ factor.T / n_features + 0.2 * np.eye(n_features)
    mean = rng.normal(size=n_features)
    return rng.multivariate_normal(mean, covariance, size=n_samples)


def test_monotone_bivariate_pattern_has_andersons_closed_form():
    # x1 always observed, x2 on the first rows only: the maximum-likelihood
    # estimates factor into the regression of x2 on x1 over the complete rows
    # and the moments of x1 over all rows (Anderson 1957; Little and Rubin
    # 2019, section 7.2).
    X = correlated_gaussian(400, 2, 0)
    Z = X.copy()
    Z[250:, 1] = np.nan
    x1, complete = X[:, 0], X[:250]
    slope, intercept = np.polyfit(complete[:, 0], complete[:, 1], 1)
    residual = complete[:, 1] - (slope * complete[:, 0] + intercept)
    variance1 = x1.var()
    expected_mean = [x1.mean(), intercept + slope * x1.mean()]
    expected_covariance = [
        [variance1, slope * variance1],
        [slope * variance1, residual.var() + slope**2 * variance1],
    ]
    mean, covariance, filled, _ = incomplete_gaussian(Z, 0.0, max_iter=2000, tol=1e-13)
    assert_allclose(mean, expected_mean, rtol=1e-6)
    assert_allclose(covariance, expected_covariance, rtol=1e-5)
    # The missing entries are filled with the regression's predictions.
    assert_allclose(filled[250:, 1], slope * x1[250:] + intercept, rtol=1e-5)


def test_complete_rows_give_their_mean_and_covariance_plus_the_ridge():
    X = correlated_gaussian(300, 4, 1)
    mean, covariance, filled, log_likelihood = incomplete_gaussian(X, 0.01)
    assert_allclose(mean, X.mean(0))
    assert_allclose(covariance, np.cov(X.T, bias=True) + 0.01 * np.eye(4))
    assert_allclose(filled, X)
    # Nothing to iterate on: one E-step, one M-step, and no change.
    assert len(log_likelihood) == 2
    assert log_likelihood[1] == pytest.approx(log_likelihood[0])


def test_filled_rows_are_the_conditional_means_of_the_estimate():
    # Up to all but one feature missing, so that both routes (through the
    # precision, and through the observed block) are taken.
    Z = remove_at_random(correlated_gaussian(500, 5, 2), 0.5, 0)
    mean, covariance, filled, _ = incomplete_gaussian(Z, 1e-6)
    counts = np.isnan(Z).sum(1)
    assert {1, 4} <= set(counts)
    expected = conditional_means(mean, covariance, Z)
    partly = counts < 5
    assert_allclose(filled[partly], expected[partly], rtol=1e-10, atol=1e-12)
    # A row with nothing observed stays at the mean.
    assert_allclose(filled[~partly], np.broadcast_to(mean, filled[~partly].shape))


def incomplete_rows_and_moments(rate, seed):
    """Rows with entries missing (the first, all) and another Gaussian's moments."""
    Z = remove_at_random(correlated_gaussian(60, 5, seed + 3), rate, seed + 1)
    Z[0] = np.nan
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(5, 5))
    return Z, rng.normal(size=5), factor @ factor.T + 0.1 * np.eye(5)


def test_observed_log_density_is_the_marginal_density():
    Z, mean, covariance = incomplete_rows_and_moments(0.5, 0)
    expected = [
        multivariate_normal(mean[o], covariance[np.ix_(o, o)]).logpdf(row[o])
        if o.any()
        else 0.0
        for row, o in ((row, ~np.isnan(row)) for row in Z)
    ]
    assert_allclose(observed_log_density(Z, mean, covariance), expected, rtol=1e-10)


def test_em_never_lowers_the_likelihood_and_reaches_a_maximum():
    Z = remove_at_random(correlated_gaussian(800, 6, 4), 0.4, 2)
    mean, covariance, _, log_likelihood = incomplete_gaussian(
        Z, 0.0, max_iter=500, tol=1e-12
    )
    assert np.all(np.diff(log_likelihood) > -1e-12)
    # Well above the mean-filled start.
    assert log_likelihood[-1] > log_likelihood[0] + 0.1
    # The mean over the rows with something observed, at the estimate.
    counted = ~np.isnan(Z).all(1)
    assert counted.sum() < len(Z)
    best = observed_log_density(Z[counted], mean, covariance).mean()
    assert log_likelihood[-1] == pytest.approx(best, abs=1e-12)
    # A maximum: moving the mean or scaling the covariance lowers it.
    for shift in np.eye(6)[:2] * 0.01:
        assert observed_log_density(Z[counted], mean + shift, covariance).mean() < best
    for factor in (0.99, 1.01):
        assert observed_log_density(Z[counted], mean, factor * covariance).mean() < best


def test_em_on_incomplete_rows_recovers_the_gaussian():
    # 1,500 rows of a known Gaussian, 30 % of the entries missing at random:
    # the estimate is close to the truth, mean filling is not.
    rng = np.random.default_rng(5)
    true_covariance = np.array([[1.0, 0.8, 0.5], [0.8, 1.0, 0.6], [0.5, 0.6, 1.0]])
    X = rng.multivariate_normal(np.zeros(3), true_covariance, size=1500)
    Z = remove_at_random(X, 0.3, 3)
    _, covariance, _, _ = incomplete_gaussian(Z, 0.0, max_iter=200, tol=1e-10)
    assert np.abs(covariance - true_covariance).max() < 0.08
    mean_filled = np.cov(np.nan_to_num(Z).T, bias=True)
    assert np.abs(mean_filled - true_covariance).max() > 0.3


def test_em_iterates_on_a_subset_and_fills_every_row():
    Z = remove_at_random(correlated_gaussian(EM_ROWS + 500, 3, 6), 0.2, 4)
    mean, covariance, filled, _ = incomplete_gaussian(Z, 1e-6)
    assert not np.isnan(filled).any()
    partly = ~np.isnan(Z).all(1)
    assert_allclose(
        filled[partly], conditional_means(mean, covariance, Z)[partly], rtol=1e-10
    )


def test_budget_limits_iterations_and_falls_back_to_mean_filling(monkeypatch):
    Z = remove_at_random(correlated_gaussian(300, 8, 7), 0.3, 5)
    missing = np.isnan(Z)
    # The cost in operations: D^3 for the factors and min(m, o)^3 per row,
    # once for the last filling, then per iteration (all 300 rows are fewer
    # than EM_ROWS, and none is wholly missing).
    m = missing.sum(1)
    assert (m < 8).all()
    one_pass = 8**3 + (np.minimum(m, 8 - m) ** 3).sum()
    expected = int((1e5 - one_pass) // one_pass)
    assert 0 < expected < 100
    assert em_iterations(missing, 100, 1e5) == expected
    log_likelihood = incomplete_gaussian(Z, 1e-6, max_iter=100, tol=0.0, budget=1e5)[3]
    assert len(log_likelihood) == expected + 1  # the start's, then each iteration's
    assert em_iterations(missing, 100, 1e4) == 0
    assert incomplete_gaussian(Z, 1e-6, budget=1e4) is None
    monkeypatch.setattr("skvae._incomplete.EM_BUDGET", 1e4)
    filled, moments = filled_rows(Z, 1e-6, 0)
    assert moments is None
    assert_allclose(filled, np.nan_to_num(Z))


def test_feature_unobserved_in_the_rows_em_sees_keeps_standard_moments():
    # Its observed values lie outside the rows EM sees (the estimator's
    # held-out rows, or those past EM_ROWS): it stays at mean 0 and variance
    # 1 (plus the ridge, once per iteration), uncorrelated, and the other
    # features are estimated as without it.
    Z = remove_at_random(correlated_gaussian(500, 3, 9), 0.2, 7)
    Z[:, 2] = np.nan
    mean, covariance, filled, _ = incomplete_gaussian(Z, 1e-6)
    assert np.isfinite(filled).all()
    assert mean[2] == 0.0
    assert_allclose(covariance[2], [0.0, 0.0, 1.0], atol=1e-4)
    alone = incomplete_gaussian(Z[:, :2], 1e-6)
    assert_allclose(mean[:2], alone[0], rtol=1e-10)
    assert_allclose(covariance[:2, :2], alone[1], rtol=1e-10)


def test_filled_rows_draw_the_missing_entries_from_their_conditional():
    # Completed with draws, the rows spread as the data do: their
    # covariance is the EM estimate's, up to sampling error, where rows
    # filled with conditional means fall short by the conditional
    # covariances. Observed entries are untouched, and a seed repeats them.
    Z = remove_at_random(correlated_gaussian(EM_ROWS, 4, 8), 0.4, 6)
    drawn, (mean, covariance) = filled_rows(Z, 1e-6, 0)
    observed = ~np.isnan(Z)
    assert_allclose(drawn[observed], Z[observed])
    assert not np.isnan(drawn).any()
    assert np.abs(np.cov(drawn.T, bias=True) - covariance).max() < 0.1
    means = incomplete_gaussian(Z, 1e-6)[2]
    assert np.abs(np.cov(means.T, bias=True) - covariance).max() > 0.2
    assert_allclose(filled_rows(Z, 1e-6, 0)[0], drawn)
    assert not np.allclose(filled_rows(Z, 1e-6, 1)[0], drawn)


def test_observed_mahalanobis_is_the_distance_over_the_observed_entries():
    Z, mean, covariance = incomplete_rows_and_moments(0.4, 2)
    expected = []
    for row in Z:
        o = ~np.isnan(row)
        r = row[o] - mean[o]
        expected.append(r @ np.linalg.solve(covariance[np.ix_(o, o)], r))
    distance, filled, log_det = observed_mahalanobis(Z, mean, covariance)
    assert_allclose(distance, expected, rtol=1e-10, atol=1e-12)
    assert log_det == pytest.approx(np.linalg.slogdet(covariance)[1], rel=1e-12)
    assert_allclose(filled, conditional_means(mean, covariance, Z), rtol=1e-10)


@pytest.mark.parametrize("k", [1, 3, 9])
def test_tail_equivalent_distance_keeps_the_chi2_tail(k):
    n_features = 10
    tail = np.array([0.5, 0.1, 1e-2, 1e-4, 1e-8])
    equivalent = tail_equivalent_distance(chi2.isf(tail, k), k, n_features)
    # Wilson and Hilferty's approximation: within a few percent of the
    # distance over all features with the same tail probability (8 % for
    # one observed entry, 1e-8 out).
    expected = chi2.isf(tail, n_features)
    assert_allclose(equivalent[:4], expected[:4], rtol=0.03)
    assert_allclose(equivalent[4], expected[4], rtol=0.1)
    assert (np.diff(equivalent) > 0).all()


def test_tail_equivalent_distance_of_complete_rows_is_their_own():
    distance = np.array([0.0, 0.3, 5.0, 80.0, 1e6])
    assert_allclose(tail_equivalent_distance(distance, 7, 7), distance, rtol=1e-12)
    # Far outliers, whose tail probabilities underflow, stay finite and ordered.
    far = tail_equivalent_distance(np.array([1e4, 1e8, 1e12]), 2, 30)
    assert np.isfinite(far).all() and (np.diff(far) > 0).all()
    # Nothing observed: the median distance.
    assert tail_equivalent_distance(np.zeros(1), 0, 12)[0] == pytest.approx(
        chi2.median(12), rel=0.01
    )
