"""The closed-form start: probabilistic PCA, the mixture prior, and the module at it."""

import copy
import os
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from conftest import DEVICE
from numpy.testing import assert_allclose, assert_array_equal
from scipy import special, stats
from sklearn.covariance import ledoit_wolf
from sklearn.decomposition import PCA, FactorAnalysis
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_info, threadpool_limits

import skvae
import skvae._linear_start as linear_start
from skvae import GaussianVAE
from skvae._likelihood import log_mean_exp
from skvae._linear_start import (
    AVERAGED_MIXTURES,
    CV_FOLDS,
    MAX_PRIOR_COMPONENTS,
    _bic_path,
    _Codes,
    _cross_validated,
    _one_standard_error,
    averaged_mixture,
    larger_prior,
    mixture_prior,
    probabilistic_pca,
    resolution_variance,
    shrunk_covariance,
    start_log_likelihood,
)
from skvae._model import VAEModule


def correlated(n_samples=600, n_features=5, seed=0):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_features, n_features))
    return rng.normal(size=(n_samples, n_features)) @ mixing + rng.normal(
        size=n_features
    )


@pytest.mark.parametrize("n_components", [1, 3])
def test_start_is_scikit_learns_probabilistic_pca(n_components):
    """W W^T + sigma^2 I is sklearn's PCA covariance, as a maximum-likelihood fit.

    scikit-learn divides the covariance by n - 1; the maximum-likelihood
    solution of Tipping and Bishop by n.
    """
    Z = correlated()
    n = Z.shape[0]
    start = probabilistic_pca(Z, n_components, min_variance=1e-8)
    covariance = PCA(n_components).fit(Z).get_covariance() * (n - 1) / n
    W = start.decoder_weight
    model = W @ W.T + np.diag(start.noise_variance)
    assert_allclose(model, covariance, rtol=1e-8, atol=1e-10)
    expected = stats.multivariate_normal(Z.mean(0), covariance).logpdf(Z)
    assert_allclose(start_log_likelihood(start, Z), expected, rtol=1e-8)


def test_full_start_is_the_maximum_likelihood_gaussian():
    Z = correlated()
    start = probabilistic_pca(Z, Z.shape[1], min_variance=1e-8)
    gaussian = GaussianMixture(1, reg_covar=0.0).fit(Z)
    assert_allclose(
        start_log_likelihood(start, Z), gaussian.score_samples(Z), rtol=1e-8
    )
    assert start.noise_variance[0] < np.linalg.eigvalsh(np.cov(Z.T)).min()


def factor_rows(n_samples=2000, seed=0):
    """Rows of a two-factor model whose noise variance differs by feature."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(6, 2)) * 1.5
    noise = np.array([0.05, 0.2, 0.5, 1.0, 1.5, 2.0])
    Z = rng.normal(size=(n_samples, 2)) @ weight.T + rng.normal(size=6)
    return Z + rng.normal(size=(n_samples, 6)) * np.sqrt(noise), noise


def test_per_feature_start_is_scikit_learns_factor_analysis():
    Z, noise = factor_rows()
    start = probabilistic_pca(Z, 2, 1e-8, per_feature_noise=True)
    analysis = FactorAnalysis(2, tol=1e-12, max_iter=100_000).fit(Z)
    W = start.decoder_weight
    model = W @ W.T + np.diag(start.noise_variance)
    assert_allclose(model, analysis.get_covariance(), atol=1e-3)
    assert_allclose(start_log_likelihood(start, Z).mean(), analysis.score(Z), atol=1e-6)
    assert_allclose(start.noise_variance, noise, rtol=0.15)
    # Probabilistic PCA's one noise variance fits these rows worse by far.
    isotropic = probabilistic_pca(Z, 2, 1e-8)
    assert (
        start_log_likelihood(isotropic, Z).mean()
        < start_log_likelihood(start, Z).mean() - 1.0
    )


@pytest.mark.parametrize("seed", range(3))
def test_per_feature_start_is_never_worse_than_probabilistic_pca(seed):
    # Data with no factor structure at all: the iteration starts at
    # probabilistic PCA's fit and keeps its best iterate.
    Z = correlated(n_samples=300, n_features=7, seed=seed)
    for n_components in (1, 3, 6):
        analysis = probabilistic_pca(Z, n_components, 1e-8, per_feature_noise=True)
        isotropic = probabilistic_pca(Z, n_components, 1e-8)
        assert (
            start_log_likelihood(analysis, Z).mean()
            >= start_log_likelihood(isotropic, Z).mean() - 1e-12
        )


def test_per_feature_start_with_all_dimensions_is_the_full_gaussian():
    Z = correlated()
    start = probabilistic_pca(Z, 5, 1e-8, per_feature_noise=True)
    full = probabilistic_pca(Z, 5, 1e-8)
    for name in ("decoder_weight", "encoder_weight", "noise_variance"):
        assert_array_equal(getattr(start, name), getattr(full, name))


def test_per_feature_start_posterior_is_exact_and_diagonal():
    Z, _ = factor_rows()
    start = probabilistic_pca(Z, 2, 1e-8, per_feature_noise=True)
    W, psi = start.decoder_weight, start.noise_variance
    precision = np.eye(2) + W.T @ (W / psi[:, None])
    # W's rotation makes the posterior covariance diagonal, as the encoder's is.
    assert_allclose(precision, np.diag(np.diag(precision)), atol=1e-10)
    covariance = np.linalg.inv(precision)
    assert_allclose(start.posterior_std, np.sqrt(np.diag(covariance)), rtol=1e-10)
    assert_allclose(
        start.encoder_weight, covariance @ W.T / psi, rtol=1e-10, atol=1e-12
    )
    assert_allclose(start.encoder_bias, -start.encoder_weight @ Z.mean(0), rtol=1e-10)


@pytest.mark.parametrize("shrinkage", [0.0, 0.3, 1.0])
def test_shrinkage_keeps_the_variances_and_scales_the_correlations(shrinkage):
    Z = correlated()
    covariance = np.cov(Z, rowvar=False, bias=True)
    shrunk = shrunk_covariance(Z, shrinkage)
    assert_allclose(np.diag(shrunk), np.diag(covariance), rtol=1e-12)
    spread = np.sqrt(np.diag(covariance))
    correlation = covariance / np.outer(spread, spread)
    off = ~np.eye(Z.shape[1], dtype=bool)
    assert_allclose(
        (shrunk / np.outer(spread, spread))[off],
        (1 - shrinkage) * correlation[off],
        atol=1e-12,
    )
    # The full start is then the Gaussian with that covariance.
    start = probabilistic_pca(Z, Z.shape[1], 1e-8, shrinkage)
    expected = stats.multivariate_normal(Z.mean(0), shrunk).logpdf(Z)
    assert_allclose(start_log_likelihood(start, Z), expected, rtol=1e-8)


def test_resolution_variance_is_a_rounding_error_on_the_grid():
    Z = np.array(
        [
            [0.0, 2.0, 0.0, 1e-3],
            [1.0, 2.0, 0.25, 2e-3],
            [1.0, 2.0, np.nan, 4e-3],
            [3.0, 2.0, 1.0, 8e-3],
        ]
    )
    # Smallest gaps 1 (not 2), none (constant), 0.25 (NaN ignored), 1e-3.
    expected = np.array([1.0, 0.0, 0.0625, 1e-6]) / 12
    assert_allclose(resolution_variance(Z), expected, rtol=1e-12)


def test_variance_floor_raises_only_the_diagonal_below_it():
    # The full start is the Gaussian whose covariance is the sample one with
    # its diagonal floored: a constant feature gets the floor, the others
    # (variances far above it) and every covariance are unchanged.
    Z = correlated(n_features=3)
    Z = np.column_stack([Z, np.full(len(Z), 2.0)])
    floor = np.array([0.5, 0.5, 0.5, 0.3])
    start = probabilistic_pca(Z, 4, 1e-8, variance_floor=floor)
    W = start.decoder_weight
    model = W @ W.T + np.diag(start.noise_variance)
    expected = np.cov(Z, rowvar=False, bias=True)
    assert np.diag(expected)[:3].min() > 0.5
    expected[3, 3] = 0.3
    assert_allclose(model, expected, rtol=1e-8, atol=1e-10)


def test_auto_shrinkage_is_ledoit_wolf_on_the_correlations():
    # Ledoit-Wolf shrinks toward trace/p times the identity, which for rows
    # scaled to unit variance is their diagonal: the same estimator.
    Z = correlated(n_samples=40, n_features=8)
    spread = Z.std(0)
    expected = ledoit_wolf(Z / spread)[0] * np.outer(spread, spread)
    assert_allclose(shrunk_covariance(Z, "auto"), expected, rtol=1e-10)
    # One row: no correlations to shrink, and no warning from scikit-learn
    # ("Only one sample available") about a reshape the user cannot make.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_array_equal(shrunk_covariance(Z[:1], "auto"), np.zeros((8, 8)))


@pytest.mark.parametrize("per_feature_noise", [False, True])
@pytest.mark.parametrize("n_components", [2, 5])
def test_module_at_the_start_has_the_exact_posterior(n_components, per_feature_noise):
    """Every importance weight equals p(x): the encoder is the exact posterior."""
    Z = correlated()
    start = probabilistic_pca(
        Z, n_components, min_variance=1e-8, per_feature_noise=per_feature_noise
    )
    variance = "feature" if per_feature_noise else "shared"
    module = VAEModule(5, n_components, (8,), "relu", variance, 1e-8, linear_path=True)
    module.initialize_linear(start)
    module = module.double()
    module.variance.copy_(torch.tensor(start.noise_variance))
    eps = torch.tensor(np.random.default_rng(1).normal(size=(16, n_components)))
    log_w = module.importance_log_weights(torch.tensor(Z[:50]), eps).detach().numpy()
    exact = start_log_likelihood(start, Z[:50])
    # float32 parameters: the weights agree with p(x) to float32 precision.
    assert_allclose(log_w, np.repeat(exact[:, None], 16, 1), rtol=1e-4, atol=1e-4)


def clusters(n_samples=900, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0.0, 1.0], [4.0, 1.0, -1.0]])
    labels = rng.integers(0, 2, n_samples)
    return centres[labels] + rng.normal(size=(n_samples, 3)) * [1.0, 0.5, 0.3]


def test_mixture_prior_follows_clustered_data():
    Z = clusters()
    start = mixture_prior(
        probabilistic_pca(Z, 3, 1e-8), Z, "auto", random_state=0, min_variance=1e-8
    )
    assert start.prior_components == 2
    gmm = GaussianMixture(2, random_state=0).fit(Z)
    # The start in data space is the mixture fitted to the codes, mapped back:
    # up to EM's local optimum, the mixture fitted to Z itself.
    assert abs(start_log_likelihood(start, Z).mean() - gmm.score(Z)) < 0.01
    one = start_log_likelihood(probabilistic_pca(Z, 3, 1e-8), Z).mean()
    assert start_log_likelihood(start, Z).mean() > one + 0.3


def test_gaussian_data_keep_the_standard_normal_prior():
    Z = correlated(n_samples=2000)
    start = mixture_prior(probabilistic_pca(Z, 5, 1e-8), Z, "auto", 0, 1e-8)
    assert start.prior_components == 1 and start.prior_weights is None


def few_rows_per_parameter(n_samples, seed, n_features=8):
    """Four separated clusters, each with its own strongly correlated shape.

    A full-covariance component has 44 parameters in 8 dimensions: on 150
    rows, BIC may not try four of them (more parameters than rows).
    """
    rng = np.random.default_rng(seed)
    shapes = np.random.default_rng(100)  # the same clusters for every seed
    factors = [
        np.linalg.qr(shapes.normal(size=(n_features, n_features)))[0]
        * np.geomspace(1.5, 0.2, n_features)
        for _ in range(4)
    ]
    labels = rng.integers(0, 4, n_samples)
    noise = rng.normal(size=(n_samples, n_features))
    centres = 6.0 * np.eye(4, n_features)
    return np.stack(
        [centres[k] + factors[k] @ e for k, e in zip(labels, noise, strict=True)]
    )


def test_bic_path_counts_parameters_against_rows():
    codes = few_rows_per_parameter(150, 0)
    n_parameters = {"full": 8 + 36, "diag": 16}
    within = _bic_path(codes, 0)
    assert all(fit[2] for fit in within)
    for mixture, bic, _ in within:
        k = mixture.n_components
        assert k * n_parameters[mixture.covariance_type] + k - 1 <= 150 or k == 1
        assert bic == pytest.approx(mixture.bic(codes))
    beyond = _bic_path(codes, 0, within_row_count=False)
    assert not all(fit[2] for fit in beyond)
    # The search with the cap is the start of the one without it.
    assert [(m.covariance_type, m.n_components) for m, _, _ in within] == [
        (m.covariance_type, m.n_components) for m, _, w in beyond if w
    ]
    # Going on from a search reuses its mixtures and fits the same others.
    again = _bic_path(codes, 0, within_row_count=False, fitted=within)
    assert [m for m, _, w in again if w] == [m for m, _, _ in within]
    assert [bic for _, bic, _ in again] == pytest.approx([b for _, b, _ in beyond])


def test_held_out_rows_find_a_mixture_beyond_the_row_count():
    Z, held_out, test = (
        few_rows_per_parameter(n, seed) for n, seed in ((150, 0), (150, 1), (4000, 2))
    )
    start = mixture_prior(probabilistic_pca(Z, 8, 1e-8), Z, "auto", 0, 1e-8)
    # BIC may not try four full components (177 parameters on 150 rows).
    first = start.prior_search.chosen
    assert (first.covariance_type, first.n_components) != ("full", 4)
    assert larger_prior(start, held_out) == (("full", 4),)
    # The larger mixture generalizes: new rows from the same clusters agree.
    larger = mixture_prior(
        probabilistic_pca(Z, 8, 1e-8), Z, "auto", 0, 1e-8, structure=("full", 4)
    )
    gain = start_log_likelihood(larger, test) - start_log_likelihood(start, test)
    assert gain.mean() > 0.5
    # Rows the larger mixture fits worse (far out, where its tight
    # components put less mass) veto it.
    far = np.random.default_rng(3).normal(size=(150, 8)) * 8.0
    assert larger_prior(start, far) is None
    # Gaussian held-out rows of Gaussian data find nothing larger.
    Z, held_out = np.split(correlated(n_samples=400, n_features=8), 2)
    start = mixture_prior(probabilistic_pca(Z, 8, 1e-8), Z, "auto", 0, 1e-8)
    assert start.prior_components == 1
    assert larger_prior(start, held_out) is None


def blas_threads():
    return [
        pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"
    ]


def set_blas_threads(n_threads):
    """Set the BLAS's threads from a thread that then ends.

    threadpoolctl lets one live thread at a time set OpenBLAS's threads; a
    limit set by a thread that has ended binds the process without holding
    on to that control, as a user's setting would.
    """
    setter = threading.Thread(
        target=threadpool_limits, kwargs={"limits": n_threads, "user_api": "blas"}
    )
    setter.start()
    setter.join(timeout=10)


@pytest.fixture
def two_blas_threads():
    """Two BLAS threads (whatever the environment set), restored afterwards."""
    before = blas_threads()
    set_blas_threads(2)
    if not blas_threads() or min(blas_threads()) < 2:
        set_blas_threads(min(before, default=1))
        pytest.skip("no BLAS library that runs two threads")
    yield
    set_blas_threads(min(before))


def test_mixture_search_runs_em_with_one_blas_thread(monkeypatch, two_blas_threads):
    during = {"mixture_prior": [], "larger_prior": []}
    stage = "mixture_prior"
    fit = GaussianMixture.fit

    def recording_fit(self, X, y=None):
        during[stage].extend(blas_threads())
        return fit(self, X, y)

    monkeypatch.setattr(GaussianMixture, "fit", recording_fit)
    # Clusters BIC cannot resolve on 150 rows: larger_prior fits more mixtures.
    Z, held_out = few_rows_per_parameter(150, 0), few_rows_per_parameter(150, 1)
    start = mixture_prior(probabilistic_pca(Z, 8, 1e-8), Z, "auto", 0, 1e-8)
    stage = "larger_prior"
    assert larger_prior(start, held_out) == (("full", 4),)
    for threads in during.values():
        assert threads and set(threads) == {1}
    # The limit is lifted on return.
    assert min(blas_threads()) == 2


def test_fits_in_threads_leave_the_blas_threads_as_they_were(two_blas_threads):
    # Two threads enter at once; each, setting the limit and restoring what
    # it found, would leave one BLAS thread behind when they overlap.
    before = blas_threads()
    together = threading.Barrier(2)

    @linear_start.one_blas_thread
    def search():
        threads = blas_threads()
        time.sleep(0.2)
        return threads

    inside = []

    def run():
        together.wait(timeout=10)
        inside.extend(search())

    workers = [threading.Thread(target=run) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)
    assert len(inside) == 2 * len(before) and set(inside) == {1}
    assert blas_threads() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork")
def test_a_child_forked_while_another_thread_searches_can_search():
    holding, release = threading.Event(), threading.Event()

    def hold():
        with linear_start._BLAS_LIMIT_LOCK:
            holding.set()
            release.wait(timeout=10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(timeout=10)
    try:
        pid = os.fork()
        if pid == 0:  # the child: the holder thread does not exist here
            os._exit(0 if linear_start._BLAS_LIMIT_LOCK.acquire(timeout=5) else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join(timeout=10)
    assert os.waitstatus_to_exitcode(status) == 0


def many_clusters(n_samples, seed, n_clusters=40):
    """Rows of ``n_clusters`` small round clusters on a grid in the plane."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_clusters)))
    centres = np.stack(np.divmod(np.arange(n_clusters), side), axis=1) * 4.0
    labels = rng.integers(0, n_clusters, n_samples)
    return centres[labels] + 0.5 * rng.normal(size=(n_samples, 2))


def test_held_out_rows_grow_the_mixture_past_the_bic_search():
    """BIC's search stops at MAX_PRIOR_COMPONENTS; 40 clusters need more."""
    Z, held_out, test = (
        many_clusters(n, seed) for n, seed in ((4000, 0), (800, 1), (4000, 2))
    )
    start = mixture_prior(probabilistic_pca(Z, 2, 1e-8), Z, "auto", 0, 1e-8)
    assert start.prior_components <= MAX_PRIOR_COMPONENTS
    structures = larger_prior(start, held_out)
    assert structures is not None and structures[0][1] > MAX_PRIOR_COMPONENTS
    # Then the larger ones the held-out rows cannot tell from the best.
    sizes = [k for _, k in structures]
    assert len(sizes) > 1 and sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    larger = mixture_prior(
        probabilistic_pca(Z, 2, 1e-8), Z, "auto", 0, 1e-8, structures[0]
    )
    # New rows from the same clusters agree.
    gain = start_log_likelihood(larger, test) - start_log_likelihood(start, test)
    assert gain.mean() > 0.2


def test_a_search_cut_by_its_cap_grows_whatever_its_last_mixtures_scored():
    """EM's local optima among 13 to 16 components do not stop the growth.

    On these rows the held-out rows score full mixtures of 13 components
    best among those of the BIC search, which reached its cap of 16: the
    three larger ones, each a local optimum of EM, would count as misses.
    """
    Z, held_out = many_clusters(4000, 105), many_clusters(800, 205)
    start = mixture_prior(probabilistic_pca(Z, 2, 1e-8), Z, "auto", 0, 1e-8)
    full = [
        m.n_components
        for m, _, _ in start.prior_search.path
        if m.covariance_type == "full"
    ]
    assert max(full) == MAX_PRIOR_COMPONENTS
    structures = larger_prior(start, held_out)
    assert structures is not None and structures[0][1] > MAX_PRIOR_COMPONENTS


def test_a_kept_structure_too_large_for_the_rows_is_searched_again():
    """A warm-started refit on fewer rows than the kept mixture's components."""
    Z = many_clusters(40, 0)
    start = mixture_prior(
        probabilistic_pca(Z, 2, 1e-8), Z, "auto", 0, 1e-8, structure=("full", 54)
    )
    assert 1 <= start.prior_components <= 40
    assert start.prior_search is not None  # the BIC search ran instead


def test_one_standard_error_rule_takes_the_smallest_close_mixture():
    Z = few_rows_per_parameter(300, 0)
    mixtures = [GaussianMixture(k, random_state=0).fit(Z) for k in (2, 3, 4)]
    rng = np.random.default_rng(0)
    best = 1.0 + rng.normal(size=400)
    wide, narrow = rng.normal(size=(2, 400))
    wide, narrow = wide - wide.mean(), narrow - narrow.mean()
    # Per-row held-out scores: the largest mixture is best; the middle one
    # is 0.05 a row behind with a standard error of 0.1, the smallest 0.5
    # behind with a standard error of 0.05.
    close = best - 0.05 - 2.0 * wide
    far = best - 0.5 - narrow
    scored = list(zip(mixtures, (far, close, best), strict=True))
    assert _one_standard_error(scored) is mixtures[1]
    # The standard error is that of the paired per-row differences: 0.05
    # behind on every row is no noise, however noisy each row's score.
    level = list(zip(mixtures, (far, best - 0.05, best), strict=True))
    assert _one_standard_error(level) is mixtures[2]
    # The best itself, where the close one has more parameters.
    swapped = [(mixtures[1], best), (mixtures[2], close)]
    assert _one_standard_error(swapped) is mixtures[1]


def test_cross_validation_scores_each_row_by_a_fit_without_it():
    """Known answer: one full component is the Gaussian of the other folds.

    The rows are the search's and the held-out ones together; each fold is
    scored under the start at a one-component mixture fitted to the codes of
    the other folds, which in data space is the maximum-likelihood Gaussian
    of those rows (mean and covariance with n, up to GaussianMixture's
    ``reg_covar`` on the whitened codes).
    """
    Z, held_out = np.split(correlated(237, 4, 0), [200])
    codes = _Codes(probabilistic_pca(Z, 4, 1e-8), Z, 1e-8)
    scores = _cross_validated(codes, held_out, [("full", 1), ("diag", 2)], 0)
    assert set(scores) == {("full", 1), ("diag", 2)}
    rows = np.vstack([Z, held_out])
    assert scores["full", 1].shape == (len(rows),)
    folds = KFold(CV_FOLDS, shuffle=True, random_state=0).split(rows)
    for fitted, scored in folds:
        gaussian = stats.multivariate_normal(
            rows[fitted].mean(0), np.cov(rows[fitted], rowvar=False, bias=True)
        )
        assert_allclose(
            scores["full", 1][scored], gaussian.logpdf(rows[scored]), rtol=1e-5
        )
    # A structure that a fold's other rows cannot fit: no scores.
    assert _cross_validated(codes, held_out, [("full", 60)], 0) is None


def test_cross_validation_with_fewer_latent_dimensions():
    """Known answer: codes are posterior means; one component is refitted per fold.

    With 2 latent dimensions of 5 features, the start at a mixture of one
    component (mean m, covariance S of the other folds' codes) is the
    Gaussian N(W m + b, W (S + diag(s^2)) W^T + diag(noise)), s the
    posterior standard deviation added back to the codes' spread.
    """
    Z, held_out = np.split(correlated(260, 5, 3), [220])
    start = probabilistic_pca(Z, 2, 1e-8)
    codes = _Codes(start, Z, 1e-8)
    assert_allclose(codes.encode(Z), codes.values)
    scores = _cross_validated(codes, held_out, [("full", 1)], 0)["full", 1]
    rows, values = np.vstack([Z, held_out]), codes.encode(np.vstack([Z, held_out]))
    W, b = start.decoder_weight, start.decoder_bias
    for fitted, scored in KFold(CV_FOLDS, shuffle=True, random_state=0).split(rows):
        mean = values[fitted].mean(0)
        spread = np.cov(values[fitted], rowvar=False, bias=True) + np.diag(
            start.posterior_std**2
        )
        gaussian = stats.multivariate_normal(
            W @ mean + b, W @ spread @ W.T + np.diag(start.noise_variance)
        )
        assert_allclose(scores[scored], gaussian.logpdf(rows[scored]), rtol=1e-5)


def _scripted_cross_validation(monkeypatch, gains):
    """Cross-validated scores: noisy rows, each structure ``gains`` above the
    first (BIC's choice), with a standard error of about 0.07 a row."""
    rng = np.random.default_rng(0)

    def scripted(codes, held_out, structures, random_state):
        base = rng.normal(size=400)
        return {s: base + gains.get(s, 0.0) + rng.normal(size=400) for s in structures}

    monkeypatch.setattr(linear_start, "_cross_validated", scripted)


def _alternating_cross_validation(monkeypatch, best, other, gap):
    """Cross-validated scores: ``best`` 0.5 above every structure but
    ``other``, which scores ``gap`` below ``best`` on average, plus and minus
    1 on alternate rows: a standard error of 0.05 against ``best``."""
    signs = np.where(np.arange(400) % 2, 1.0, -1.0)

    def scripted(codes, held_out, structures, random_state):
        scores = {s: np.zeros(400) for s in structures}
        scores[best] = scores[best] + 0.5
        scores[other] = scores[other] + 0.5 - gap + signs
        return scores

    monkeypatch.setattr(linear_start, "_cross_validated", scripted)


def test_cross_validation_decides_among_close_mixtures(monkeypatch):
    """Few held-out rows: the mixtures they cannot tell apart go to CV."""
    Z, held_out = few_rows_per_parameter(150, 0), few_rows_per_parameter(30, 1)
    start = mixture_prior(probabilistic_pca(Z, 8, 1e-8), Z, "auto", 0, 1e-8)
    chosen = start.prior_search.chosen
    calls, original = [], linear_start._cross_validated

    def spy(codes, rows, structures, random_state):
        calls.append(structures)
        return original(codes, rows, structures, random_state)

    monkeypatch.setattr(linear_start, "_cross_validated", spy)
    larger_prior(start, held_out)
    assert calls, "30 held-out rows: the close mixtures are cross-validated"
    structures = calls[0]
    # BIC's choice first, as the reference, then larger mixtures only.
    assert structures[0] == (chosen.covariance_type, chosen.n_components)
    n_parameters = [linear_start._parameter_count(*s, 8) for s in structures]
    assert len(structures) > 1
    assert all(n > n_parameters[0] for n in n_parameters[1:])
    # The best of them by the mean cross-validated score, if clearly better
    # than BIC's choice; none if within noise.
    for best in structures[1:]:
        _scripted_cross_validation(monkeypatch, {best: 0.5})
        assert larger_prior(start, held_out) == (best,)
    # Followed by the larger ones within a standard error of the best, not
    # by the smaller ones.
    smallest, largest = structures[1], structures[-1]
    _alternating_cross_validation(monkeypatch, smallest, largest, 0.02)
    assert larger_prior(start, held_out) == (smallest, largest)
    _alternating_cross_validation(monkeypatch, smallest, largest, 0.08)
    assert larger_prior(start, held_out) == (smallest,)
    _alternating_cross_validation(monkeypatch, largest, smallest, 0.02)
    assert larger_prior(start, held_out) == (largest,)
    _scripted_cross_validation(monkeypatch, {structures[-1]: 0.05})
    assert larger_prior(start, held_out) is None
    # Without cross-validated scores, the held-out rows decide as before.
    monkeypatch.setattr(linear_start, "_cross_validated", lambda *args: None)
    monkeypatch.setattr(linear_start, "CV_MAX_HELD_OUT_ROWS", 0)
    alone = larger_prior(start, held_out)
    monkeypatch.setattr(linear_start, "CV_MAX_HELD_OUT_ROWS", 500)
    assert larger_prior(start, held_out) == alone


def test_a_structure_is_refitted_as_given():
    Z = few_rows_per_parameter(150, 0)
    base = probabilistic_pca(Z, 8, 1e-8)
    start = mixture_prior(base, Z, "auto", 0, 1e-8, structure=("diag", 3))
    assert start.prior_components == 3
    # Diagonal components: their Cholesky factors are diagonal too.
    for factor in start.prior_cholesky:
        assert_allclose(factor, np.diag(np.diag(factor)))
    # The mixture is fitted to the latent codes: the whitened rows.
    codes = (Z - start.decoder_bias) @ start.encoder_weight.T
    gmm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(codes)
    assert_allclose(start.prior_weights, gmm.weights_, rtol=1e-6)
    assert_allclose(start.prior_means, gmm.means_, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_averaged_mixture_is_the_mean_of_its_members_densities(covariance_type):
    # 40 clusters for 12 components: EM ends in a different optimum from
    # each start.
    Z = many_clusters(300, 0)
    first = GaussianMixture(12, covariance_type=covariance_type, random_state=7).fit(Z)
    average = averaged_mixture(first, Z, 7, 3)
    # The first member is the mixture given; the others are refitted from
    # seeds drawn from the same random state, and differ from it.
    seeds = np.random.RandomState(7).randint(np.iinfo(np.int32).max, size=2)
    members = [first] + [
        GaussianMixture(12, covariance_type=covariance_type, random_state=s).fit(Z)
        for s in seeds
    ]
    assert np.ptp([member.score(Z) for member in members]) > 0.01
    assert average.n_components == 36
    assert_allclose(average.weights_.sum(), 1.0)
    assert_allclose(average.weights_[:12], first.weights_ / 3)
    # A mixture of 36 components whose density is the members' mean density
    # (scipy's Gaussian log-density, independent of skvae's code).
    log_components = np.array(
        [
            np.log(w) + stats.multivariate_normal(m, c).logpdf(Z)
            for w, m, c in zip(
                average.weights_, average.means_, average.covariances_, strict=True
            )
        ]
    )
    log_average = np.logaddexp.reduce(log_components, axis=0)
    member_scores = np.array([m.score_samples(Z) for m in members])
    assert_allclose(log_average, np.logaddexp.reduce(member_scores) - np.log(3))
    # Jensen: every row is at least as likely as under the members on average.
    assert np.all(log_average >= member_scores.mean(0) - 1e-9)


def test_a_member_whose_em_fails_is_left_out(monkeypatch):
    Z = many_clusters(300, 0)
    first = GaussianMixture(12, random_state=7).fit(Z)
    failing_seed = np.random.RandomState(7).randint(np.iinfo(np.int32).max)

    fit_mixtures = linear_start.fit_mixtures

    def fails_once(X, n_components, covariance_type, seeds):
        # fit_mixtures' None: that member's covariance became singular.
        fitted = fit_mixtures(X, n_components, covariance_type, seeds)
        return [
            None if s == failing_seed else m for s, m in zip(seeds, fitted, strict=True)
        ]

    monkeypatch.setattr(linear_start, "fit_mixtures", fails_once)
    average = averaged_mixture(first, Z, 7, 3)
    # Two members: the first, and the one whose EM converged.
    assert average.n_components == 24
    assert_allclose(average.weights_[:12], first.weights_ / 2)
    assert_allclose(average.weights_.sum(), 1.0)


def test_an_average_takes_its_members_structures_in_turn():
    Z = many_clusters(400, 1, n_clusters=6)
    first = GaussianMixture(4, random_state=0).fit(Z)
    # Members of 4, 6, 4 diagonal, 4, 6 components; 401 are more than rows.
    also = (("full", 6), ("diag", 4), ("full", 401))
    average = averaged_mixture(first, Z, 0, 5, also)
    assert average.n_components == 4 + 6 + 4 + 4 + 6
    assert_allclose(average.weights_[:4], first.weights_ / 5)
    assert_allclose(average.weights_[4:10].sum(), 1 / 5)
    diagonal = average.covariances_[10:14]
    assert_allclose(diagonal, np.eye(2) * diagonal)  # off-diagonals zero
    # So does a single component with larger structures to average.
    single = GaussianMixture(1, random_state=0).fit(Z)
    assert averaged_mixture(single, Z, 0, 2, (("full", 6),)).n_components == 7


def test_averaging_one_mixture_or_one_component_changes_nothing():
    Z = many_clusters(200, 1, n_clusters=3)
    mixture = GaussianMixture(3, random_state=0).fit(Z)
    assert averaged_mixture(mixture, Z, 0, 1) is mixture
    single = GaussianMixture(1, random_state=0).fit(Z)
    assert averaged_mixture(single, Z, 0, 10) is single


def test_mixture_prior_averages_the_structure_it_refits():
    Z = few_rows_per_parameter(150, 0)
    base = probabilistic_pca(Z, 8, 1e-8)
    one = mixture_prior(base, Z, "auto", 0, 1e-8, structure=("diag", 3))
    five = mixture_prior(base, Z, "auto", 0, 1e-8, ("diag", 3), n_averaged=5)
    assert five.prior_components == 15
    # Its first member is the single fit, at a fifth of the weight. The
    # decoder noise is set below the narrowest of all 15 components, so the
    # share deconvolved from each differs; the codes' covariance of each
    # component (prior plus the likelihood's variance of z) does not.
    assert_allclose(five.prior_weights[:3], one.prior_weights / 5)
    assert_allclose(five.prior_means[:3], one.prior_means)

    def code_covariances(start):
        factors = start.prior_cholesky
        return factors @ np.swapaxes(factors, 1, 2) + np.diag(start.posterior_std**2)

    assert_allclose(code_covariances(five)[:3], code_covariances(one), atol=1e-10)


def _linear_fit_on_few_rows(**params):
    """A linear GaussianVAE fitted to 175 rows, 35 of them held out, on the CPU.

    Whether training beats the start depends on the training draws, and a
    seed gives other draws on a GPU: the seeds of these tests were found on
    the CPU.
    """
    return GaussianVAE(
        hidden_layer_sizes=(),
        standardize=True,
        validation_fraction=0.2,
        device="cpu",
        **params,
    ).fit(few_rows_per_parameter(175, 0))


@pytest.mark.parametrize(("random_state", "kept"), [(1, True), (3, False)])
def test_estimator_takes_the_larger_mixture_for_a_kept_start(
    random_state, kept, tmp_path
):
    # 140 training rows and 35 held out: four full components have more
    # parameters (179) than the training rows, and than all 175 rows.
    X = few_rows_per_parameter(175, 0)
    vae = _linear_fit_on_few_rows(random_state=random_state)
    assert vae._history.kept_start == kept
    # The search and the held-out rows are not kept in the fitted model.
    assert vae._start_to_refit is None
    if kept:
        # The start, refitted on all rows, has the four components that BIC
        # alone could not give them (an average of AVERAGED_MIXTURES such
        # mixtures); so has a warm-started refit.
        assert vae.module_.prior_components == 4 * AVERAGED_MIXTURES
        # The averaged prior is saved and loaded like any other.
        skvae.save(vae, tmp_path / "vae.safetensors")
        loaded = skvae.load(tmp_path / "vae.safetensors")
        assert_allclose(loaded.score_samples(X[:20]), vae.score_samples(X[:20]))
        vae.set_params(warm_start=True).fit(X)
        assert vae.module_.prior_components == 4 * AVERAGED_MIXTURES
    else:
        # Trained weights, from BIC's first choice, are kept as they are.
        assert vae.module_.prior_components < 4


def test_a_kept_start_averages_every_structure_it_is_given(monkeypatch):
    # As in the test above, with the held-out rows' choice scripted: four
    # full components, and five that they could not tell from the best.
    monkeypatch.setattr(
        skvae._base, "larger_prior", lambda *args: (("full", 4), ("full", 5))
    )
    vae = _linear_fit_on_few_rows(random_state=1)
    assert vae._history.kept_start
    half = AVERAGED_MIXTURES // 2
    assert vae.module_.prior_components == half * 4 + half * 5


def test_a_warm_start_refits_a_kept_structure_saved_as_one_pair():
    # Models saved before larger_prior returned a tuple of pairs kept one.
    vae = _linear_fit_on_few_rows(random_state=1)
    assert vae._prior_structure == (("full", 4),)
    vae._prior_structure = ("full", 4)
    vae.set_params(warm_start=True).fit(few_rows_per_parameter(175, 0))
    assert vae.module_.prior_components == 4 * AVERAGED_MIXTURES


def test_a_kept_start_with_a_given_mixture_size_is_not_averaged():
    # As in the test above, a start that training does not beat; the user
    # asked for two components, and gets two.
    vae = _linear_fit_on_few_rows(prior_components=2, random_state=1)
    assert vae._history.kept_start
    assert vae.module_.prior_components == 2


def test_closed_form_fit_keeps_no_search(tmp_path):
    # Gaussian rows: BIC searched for a mixture and chose one component.
    X = correlated(n_samples=300)
    vae = GaussianVAE(hidden_layer_sizes=(), init="linear", random_state=0).fit(X)
    assert vae.n_iter_ == 0 and vae._start_to_refit is None
    # Nothing unsaveable is left behind.
    skvae.save(vae, tmp_path / "vae.safetensors")
    loaded = skvae.load(tmp_path / "vae.safetensors")
    assert_allclose(loaded.score_samples(X[:20]), vae.score_samples(X[:20]))


def test_module_at_a_mixture_start_scores_the_mixture():
    Z = clusters()
    start = mixture_prior(probabilistic_pca(Z, 3, 1e-8), Z, "auto", 0, 1e-8)
    module = VAEModule(3, 3, (8,), "relu", "feature", 1e-8, True, True, 2)
    module.initialize_linear(start)
    module = module.double()
    module.variance.copy_(torch.tensor(start.noise_variance))
    eps = torch.special.ndtri(
        torch.quasirandom.SobolEngine(3, scramble=True, seed=0)
        .draw(1024, dtype=torch.float64)
        .clamp(1e-12, 1 - 1e-12)
    )
    x = torch.tensor(Z[:100])
    estimate = log_mean_exp(module.importance_log_weights(x, eps), 1).detach()
    error = estimate.numpy() - start_log_likelihood(start, Z[:100])
    # The encoder is the posterior of one Gaussian, not of the mixture: close
    # for rows inside a cluster, looser between them.
    assert abs(error.mean()) < 0.01 and np.abs(error).max() < 0.2


def _data_space_mixture(vae):
    """The Gaussian mixture p(x) of a model with a linear decoder, in X's units."""
    module = vae.module_
    with torch.no_grad():
        weight, bias = (t.double().cpu().numpy() for t in module.linear_decoder())
        log_weights, means, cholesky = (
            t.double().cpu().numpy() for t in module.prior_mixture()
        )
        variance = module.variance.double().cpu().numpy()
    scale = np.diag(vae.scale_)
    return [
        (
            w,
            vae.mean_ + vae.scale_ * (weight @ m + bias),
            scale @ (weight @ L @ L.T @ weight.T + np.diag(variance)) @ scale,
        )
        for w, m, L in zip(log_weights, means, cholesky, strict=True)
    ]


def test_a_kept_mixture_start_scores_its_exact_density():
    """At a kept start the hidden layers add nothing: p(x) is a Gaussian mixture.

    Scored exactly, for complete rows and for the observed entries of the
    others, whatever the number of importance draws; once training moves
    the hidden layers, the draws estimate it again.
    """
    X = few_rows_per_parameter(175, 0)
    vae = GaussianVAE(
        standardize=True, validation_fraction=0.2, random_state=0, device=DEVICE
    ).fit(X)
    assert vae._history.kept_start and vae.module_.linear_path
    assert vae.module_.prior_components == 4 * AVERAGED_MIXTURES
    assert vae.module_.has_linear_decoder
    components = _data_space_mixture(vae)
    X_test = X[:40].copy()
    X_test[:20:2, 1] = np.nan
    X_test[1:20:2, 3:] = np.nan

    def expected(row):
        o = ~np.isnan(row)
        return special.logsumexp(
            [
                w + stats.multivariate_normal(m[o], S[np.ix_(o, o)]).logpdf(row[o])
                for w, m, S in components
            ]
        )

    scores = vae.score_samples(X_test)
    assert_allclose(scores, [expected(row) for row in X_test], rtol=1e-6)
    one_draw = copy.deepcopy(vae).set_params(n_importance_samples=1)
    assert_array_equal(one_draw.score_samples(X_test), scores)
    vae.partial_fit(X)
    one_draw.partial_fit(X)
    assert not vae.module_.has_linear_decoder
    assert (one_draw.score_samples(X_test) != vae.score_samples(X_test)).all()
