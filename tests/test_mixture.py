"""Batched EM (skvae._mixture) against scikit-learn's GaussianMixture and scipy."""

import warnings

import numpy as np
import pytest
from conftest import DEVICE
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

import skvae._mixture as mixture_module
from skvae import GaussianVAE
from skvae._mixture import FittedMixture, fit_gaussian_mixture, fit_mixtures


def clusters(n_samples, seed, n_clusters=5, n_features=3):
    """Overlapping Gaussian clusters: EM takes tens of steps on them."""
    rng = np.random.default_rng(seed)
    centres = 2.5 * rng.standard_normal((n_clusters, n_features))
    labels = rng.integers(n_clusters, size=n_samples)
    mixing = rng.standard_normal((n_features, n_features))
    X = centres[labels] + 0.6 * rng.standard_normal((n_samples, n_features)) @ mixing
    return 10.0 + X  # off the origin: the centring must not matter


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
@pytest.mark.parametrize("n_components", [1, 4, 9])
def test_each_mixture_is_the_one_gaussian_mixture_fits(covariance_type, n_components):
    X = clusters(400, 0)
    seeds = [0, 11, 123456]
    ours = fit_mixtures(X, n_components, covariance_type, seeds)
    for seed, fitted in zip(seeds, ours, strict=True):
        reference = GaussianMixture(
            n_components, covariance_type=covariance_type, random_state=seed
        ).fit(X)
        # The same steps (same start, same stopping), so the same optimum.
        assert fitted.n_iter_ == reference.n_iter_
        assert fitted.converged_ == reference.converged_
        assert_allclose(fitted.weights_, reference.weights_, rtol=1e-8, atol=1e-12)
        assert_allclose(fitted.means_, reference.means_, rtol=1e-8, atol=1e-10)
        assert_allclose(
            fitted.covariances_, reference.covariances_, rtol=1e-8, atol=1e-10
        )
    # Different seeds, different local optima: the mixtures are not copies.
    if n_components == 9:
        assert np.abs(ours[0].means_ - ours[1].means_).max() > 0.1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_step_cap_stops_each_mixture_as_gaussian_mixture_stops():
    X = clusters(300, 1)
    fitted = fit_mixtures(X, 6, "full", [3], max_iter=4)[0]
    reference = GaussianMixture(6, random_state=3, max_iter=4).fit(X)
    assert fitted.n_iter_ == 4 and not fitted.converged_
    assert_allclose(fitted.means_, reference.means_, rtol=1e-9)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_batches_and_row_chunks_change_nothing(monkeypatch, covariance_type):
    X = clusters(500, 2)
    seeds = list(range(7))
    whole = fit_mixtures(X, 5, covariance_type, seeds)
    # Two mixtures per batch, 37-row chunks of the design matrix.
    monkeypatch.setattr(mixture_module, "BATCH_ELEMENTS", 2 * 5 * 500)
    monkeypatch.setattr(mixture_module, "OUTER_ELEMENTS", 37 * 10)
    chunked = fit_mixtures(X, 5, covariance_type, seeds)
    for a, b in zip(whole, chunked, strict=True):
        assert a.n_iter_ == b.n_iter_
        assert_allclose(a.means_, b.means_, rtol=1e-10)
        assert_allclose(a.covariances_, b.covariances_, rtol=1e-10, atol=1e-13)


def collapsing_rows():
    """30 copies of one row between two spread clusters: a component holds only them.

    Integers, placed symmetrically about the copies at the origin, so that
    every sum is exact: the copies' covariance is exactly zero.
    """
    rng = np.random.default_rng(3)
    spread = rng.integers(-4, 5, size=(30, 2)) + 50.0
    return np.vstack([np.zeros((30, 2)), spread, -spread])


def test_a_mixture_whose_covariance_collapses_is_none():
    X = collapsing_rows()
    # Without reg_covar the component on the copies has a zero covariance;
    # GaussianMixture raises for it, fit_mixtures gives None.
    with pytest.raises(ValueError, match="ill-defined empirical covariance"):
        GaussianMixture(3, reg_covar=0.0, random_state=0).fit(X)
    assert fit_mixtures(X, 3, "full", [0], reg_covar=0.0) == [None]
    assert fit_mixtures(X, 3, "diag", [0], reg_covar=0.0) == [None]
    # With GaussianMixture's reg_covar the same fit succeeds.
    fitted = fit_mixtures(X, 3, "full", [0])[0]
    reference = GaussianMixture(3, random_state=0).fit(X)
    assert_allclose(fitted.covariances_, reference.covariances_, rtol=1e-7)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_tied_rows_start_where_gaussian_mixture_starts(covariance_type):
    # Category codes, whitened as the start's latent codes are: many rows
    # tie, and k-means on the centred rows would label some differently
    # (its own rounding changes), so that EM would end elsewhere.
    rng = np.random.default_rng(2)
    Z = np.column_stack([rng.integers(0, k, 300) for k in (4, 3, 5)]).astype(float)
    values, vectors = np.linalg.eigh(np.cov(Z, rowvar=False, bias=True))
    codes = (Z - Z.mean(0)) @ (vectors / np.sqrt(values))
    seeds = np.random.RandomState(0).randint(np.iinfo(np.int32).max, size=10)
    for seed, fitted in zip(
        seeds, fit_mixtures(codes, 8, covariance_type, seeds), strict=True
    ):
        reference = GaussianMixture(
            8, covariance_type=covariance_type, random_state=seed
        ).fit(codes)
        assert fitted.n_iter_ == reference.n_iter_
        assert_allclose(fitted.means_, reference.means_, atol=1e-7)


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")
def test_an_empty_component_is_where_gaussian_mixture_puts_it():
    # Three distinct rows for four components: one stays empty, at the
    # origin, with GaussianMixture's covariance reg_covar * I.
    X = np.repeat([[0.0, 0.0], [1.0, 0.0], [5.0, 1.0]], 20, axis=0) + 7.0
    fitted = fit_mixtures(X, 4, "full", [0])[0]
    reference = GaussianMixture(4, random_state=0).fit(X)
    assert_allclose(fitted.weights_, reference.weights_, rtol=1e-8)
    assert_allclose(fitted.means_, reference.means_, atol=1e-12)
    assert_allclose(fitted.covariances_, reference.covariances_, atol=1e-12)


def test_a_mixture_that_fails_during_em_is_none_and_the_others_go_on(monkeypatch):
    # The first member's covariance stops being positive definite at the
    # second EM step (the third M-step, after the k-means start's), where
    # GaussianMixture would raise: it is dropped, and the other member takes
    # every step GaussianMixture takes.
    m_step, calls = mixture_module._Batch.m_step, []

    def failing_third_step(self, resp):
        params, ok = m_step(self, resp)
        calls.append(len(ok))
        if len(calls) == 3:
            ok = ok.clone()
            ok[0] = False
        return params, ok

    monkeypatch.setattr(mixture_module._Batch, "m_step", failing_third_step)
    X = clusters(300, 6)
    failed, fitted = fit_mixtures(X, 4, "full", [0, 1])
    assert failed is None
    reference = GaussianMixture(4, random_state=1).fit(X)
    assert fitted.n_iter_ == reference.n_iter_ > 3
    assert_allclose(fitted.means_, reference.means_, rtol=1e-8)
    # After the failure, only the other member is stepped.
    assert calls[:3] == [2, 2, 2] and set(calls[3:]) == {1}


def test_batches_are_bounded_by_the_members_matrices(monkeypatch):
    # 40 features, 8 components: each member's (8, 40, 40) covariances
    # outweigh its (50, 8) responsibilities; two members fit the bound.
    sizes = []
    fit = mixture_module._Batch.fit

    def recording_fit(self, seeds, tol, max_iter):
        sizes.append(len(seeds))
        return fit(self, seeds, tol, max_iter)

    monkeypatch.setattr(mixture_module._Batch, "fit", recording_fit)
    monkeypatch.setattr(mixture_module, "BATCH_ELEMENTS", 2 * 8 * 40 * 40)
    X = np.random.default_rng(5).standard_normal((50, 40))
    assert len(fit_mixtures(X, 8, "full", list(range(5)), max_iter=2)) == 5
    assert sizes == [2, 2, 1]


def spy_on_fit_mixtures(monkeypatch):
    """The calls to fit_mixtures from fit_gaussian_mixture, recorded."""
    calls, fit = [], mixture_module.fit_mixtures

    def recording(*args, **kwargs):
        calls.append(args[1:3])
        return fit(*args, **kwargs)

    monkeypatch.setattr(mixture_module, "fit_mixtures", recording)
    return calls


@pytest.mark.parametrize("random_state", [0, np.int64(42)])
def test_a_single_large_mixture_is_fitted_batched_as_gaussian_mixture_fits_it(
    monkeypatch, random_state
):
    # 12 full components in 3 dimensions: past both bounds, so batched.
    calls = spy_on_fit_mixtures(monkeypatch)
    X = clusters(600, 7, n_clusters=12)
    ours = fit_gaussian_mixture(X, 12, "full", random_state)
    reference = GaussianMixture(12, random_state=random_state).fit(X)
    assert calls == [(12, "full")]
    assert isinstance(ours, GaussianMixture)
    assert ours.n_iter_ == reference.n_iter_ and ours.converged_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert_allclose(
            getattr(ours, name), getattr(reference, name), rtol=1e-7, atol=1e-9
        )
    assert_allclose(ours.precisions_, reference.precisions_, rtol=1e-7)
    # What the BIC search and the starts read of it.
    assert_allclose(ours.score_samples(X), reference.score_samples(X), rtol=1e-9)
    assert ours.bic(X) == pytest.approx(reference.bic(X), rel=1e-10)


def test_the_bounds_of_batched_single_fits_are_inclusive(monkeypatch):
    # 9 components in 6 dimensions: exactly 1.5 per dimension, batched.
    calls = spy_on_fit_mixtures(monkeypatch)
    X = clusters(400, 8, n_clusters=9, n_features=6)
    ours = fit_gaussian_mixture(X, 9, "full", 0)
    assert calls == [(9, "full")]
    reference = GaussianMixture(9, random_state=0).fit(X)
    assert_allclose(ours.means_, reference.means_, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    "n_components, covariance_type, random_state",
    [
        (7, "full", 0),  # too few components
        (8, "full", 0),  # too few per dimension (8 < 1.5 * 6)
        (12, "diag", 0),  # GaussianMixture's diagonal fits are vectorized
        (12, "full", np.random.RandomState(0)),  # a generator it would draw from
    ],
)
def test_other_mixtures_are_fitted_by_gaussian_mixture(
    monkeypatch, n_components, covariance_type, random_state
):
    calls = spy_on_fit_mixtures(monkeypatch)
    X = clusters(400, 8, n_features=6)
    ours = fit_gaussian_mixture(X, n_components, covariance_type, random_state)
    assert calls == []
    assert ours.covariance_type == covariance_type
    assert hasattr(ours, "lower_bound_")  # GaussianMixture's own fit


def test_a_single_mixture_that_fails_batched_is_left_to_gaussian_mixture(
    monkeypatch,
):
    # Where the batched EM gives None (a covariance no longer positive
    # definite), GaussianMixture fits: it raises its own error, or, as
    # here, where its rounding differs, returns its own fit.
    monkeypatch.setattr(mixture_module, "fit_mixtures", lambda *a: [None])
    X = clusters(300, 9, n_clusters=8)
    ours = fit_gaussian_mixture(X, 8, "full", 0)
    reference = GaussianMixture(8, random_state=0).fit(X)
    assert hasattr(ours, "lower_bound_")  # GaussianMixture's own fit
    assert_allclose(ours.means_, reference.means_, rtol=0, atol=0)


def test_a_batched_single_mixture_warns_where_it_did_not_converge(monkeypatch):
    X = clusters(300, 10, n_clusters=8)
    (stopped,) = fit_mixtures(X, 8, "full", [0], max_iter=2)
    monkeypatch.setattr(mixture_module, "fit_mixtures", lambda *a: [stopped])
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        mixture = fit_gaussian_mixture(X, 8, "full", 0)
    assert isinstance(stopped, FittedMixture) and not mixture.converged_
    assert mixture.n_iter_ == 2


def test_discrete_data_leaks_no_kmeans_warning():
    # Binary features have 16 distinct rows; the prior's search tries larger
    # mixtures, whose KMeans starts warned a dozen times per fit.
    X = (np.random.default_rng(0).normal(size=(300, 4)) > 0.3).astype(float)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "Number of distinct clusters")
        warnings.filterwarnings("ignore", "Stochastic optimiser")
        GaussianVAE(max_iter=5, random_state=0, device=DEVICE).fit(X)
