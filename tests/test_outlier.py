import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import DEVICE, RANDOM_START, gaussian_log_density, two_factor_manifold
from numpy.testing import assert_allclose, assert_array_equal
from scipy.stats import chisquare
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from skvae import VAEOutlierDetector
from skvae._outlier import THRESHOLD_ROWS, c_step, reservoir_sample

# A small trained network: init="random" (the detector's default before it
# was fitted in closed form), for the tests of training with support steps.
SMALL = dict(
    hidden_layer_sizes=(16,), init="random", max_iter=40, n_importance_samples=16
)


def make_detector(**params):
    return VAEOutlierDetector(
        **{**SMALL, "random_state": 0, "device": DEVICE, **params}
    )


def correlated_gaussian(n_samples=300, seed=0):
    """Rows of a correlated 3-D Gaussian, in mixed units."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_samples, 1))
    X = np.hstack([z, 2 * z, -z]) + 0.2 * rng.normal(size=(n_samples, 3))
    return X * [1.0, 100.0, 0.01] + [5.0, -300.0, 0.0]


@pytest.fixture(scope="module")
def fitted_detectors():
    """make_detector(contamination=c) fitted on correlated_gaussian(), by c.

    Shared by several tests: do not change them.
    """
    X = correlated_gaussian()
    return {c: make_detector(contamination=c).fit(X) for c in ("auto", 0.1)}


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_planted_outliers_in_gaussian_data_are_ranked_first():
    X = correlated_gaussian()
    # Inside the range of every feature, but against the correlation.
    planted = np.array([[1.0, -2.0, -1.0], [-1.0, 2.0, 1.0], [1.0, 2.0, 1.0]])
    X = np.vstack([planted * [1.0, 100.0, 0.01] + [5.0, -300.0, 0.0], X])
    assert np.all((X[:3] > X[3:].min(0)) & (X[:3] < X[3:].max(0)))
    scores = make_detector(max_iter=100).fit(X).score_samples(X)
    assert set(np.argsort(scores)[:3]) == {0, 1, 2}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_planted_outliers_in_non_gaussian_data_are_ranked_first():
    # A parabola: the planted rows lie inside the bounding box, off the curve,
    # where a single Gaussian puts high density.
    rng = np.random.default_rng(1)
    t = rng.uniform(-2, 2, size=500)
    X = np.column_stack([t, t**2 + 0.05 * rng.normal(size=500)])
    planted = np.array([[0.0, 2.0], [0.5, 3.0], [-0.5, 2.5]])
    X = np.vstack([planted, X])
    # KL warm-up: without it this fit often stops in the collapsed solution
    # that is a single Gaussian (see the user guide).
    detector = make_detector(
        hidden_layer_sizes=(32, 32), n_components=1, kl_warmup=20, max_iter=60
    )
    scores = detector.fit(X).score_samples(X)
    assert set(np.argsort(scores)[:3]) == {0, 1, 2}
    gaussian_scores = _gaussian_log_likelihood(X)
    assert not set(np.argsort(gaussian_scores)[:3]) & {0, 1, 2}


def _gaussian_log_likelihood(X):
    from scipy import stats

    return stats.multivariate_normal(X.mean(0), np.cov(X.T)).logpdf(X)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("contamination", [0.05, 0.1, 0.5])
def test_contamination_flags_that_fraction_of_training_rows(contamination):
    X = correlated_gaussian(n_samples=200)
    detector = make_detector(contamination=contamination)
    labels = detector.fit_predict(X)
    assert np.sum(labels == -1) == round(contamination * X.shape[0])
    assert detector.offset_ == pytest.approx(
        np.percentile(detector.score_samples(X), 100 * contamination)
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_auto_threshold_is_tukeys_fence_on_training_scores():
    X = correlated_gaussian()
    X[:4] += [0.0, 2000.0, 0.0]  # far outliers
    detector = VAEOutlierDetector(random_state=0, device=DEVICE).fit(X)
    scores = detector.score_samples(X)
    q1, q3 = np.percentile(scores, [25, 75])
    assert detector.offset_ == pytest.approx(q1 - 4.0 * (q3 - q1))
    labels = detector.predict(X)
    assert np.all(labels[:4] == -1)
    # Few of the 296 normal rows: 6 (2.03 %) after the support steps have
    # converged (5 after three steps). The 2 % bound on clean data without
    # outliers is tested below, on 2,000 rows.
    assert np.sum(labels[4:] == -1) <= 7


@pytest.mark.parametrize("n_features", [2, 5, 10])
@pytest.mark.parametrize("seed", [0, 1])
def test_auto_threshold_flags_at_most_two_percent_of_clean_gaussian_rows(
    n_features, seed
):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(n_features, n_features))
    X = rng.normal(size=(2000, n_features)) @ mixing
    detector = VAEOutlierDetector(random_state=seed, device=DEVICE).fit(X)
    assert np.mean(detector.predict(X) == -1) <= 0.02
    # ... and of new rows from the same distribution.
    X_new = rng.normal(size=(2000, n_features)) @ mixing
    assert np.mean(detector.predict(X_new) == -1) <= 0.02


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("contamination", ["auto", 0.1])
def test_sign_conventions_match_scikit_learn(fitted_detectors, contamination):
    X = correlated_gaussian()
    detector = fitted_detectors[contamination]
    X_new = np.vstack([X[:50], X[:5] * 3])
    decision = detector.decision_function(X_new)
    scores = detector.score_samples(X_new)
    labels = detector.predict(X_new)
    np.testing.assert_allclose(decision, scores - detector.offset_)
    assert set(np.unique(labels)) == {-1, 1}
    np.testing.assert_array_equal(labels == -1, decision < 0)
    # Higher score_samples = more normal: the scaled-up rows score lower.
    assert scores[50:].max() < np.median(scores[:50])
    np.testing.assert_array_equal(
        make_detector(contamination=contamination).fit_predict(X), detector.predict(X)
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("contamination", ["auto", 0.1])
def test_scaling_x_shifts_scores_by_minus_d_log_c(fitted_detectors, contamination):
    X = correlated_gaussian()
    c = 8.0
    base = fitted_detectors[contamination]
    scaled = make_detector(contamination=contamination).fit(c * X)
    shift = -X.shape[1] * np.log(c)
    np.testing.assert_allclose(
        scaled.score_samples(c * X), base.score_samples(X) + shift, rtol=0, atol=1e-6
    )
    assert scaled.offset_ == pytest.approx(base.offset_ + shift, abs=1e-6)
    np.testing.assert_array_equal(scaled.predict(c * X), base.predict(X))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_pipeline_after_column_transformer():
    rng = np.random.default_rng(0)
    X = correlated_gaussian(n_samples=200)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["kind"] = rng.choice(["x", "y"], size=200)
    pipeline = make_pipeline(
        ColumnTransformer(
            [("kind", OneHotEncoder(sparse_output=False), ["kind"])],
            remainder="passthrough",
        ),
        make_detector(contamination=0.1),
    )
    labels = pipeline.fit_predict(frame)
    assert labels.shape == (200,)
    assert np.sum(labels == -1) == 20
    np.testing.assert_array_equal(labels, pipeline.predict(frame))
    np.testing.assert_array_equal(pipeline.decision_function(frame) < 0, labels == -1)
    assert pipeline.score_samples(frame).shape == (200,)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_tunes_by_held_out_log_likelihood():
    X = correlated_gaussian(n_samples=200)
    search = GridSearchCV(
        make_detector(max_iter=20), {"decoder_variance": ["feature", 100.0]}, cv=2
    ).fit(X)
    # A fixed variance of 100 (in standardized units) is a far worse density.
    assert search.best_params_ == {"decoder_variance": "feature"}
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and scores[0] > scores[1]
    assert search.best_estimator_.predict(X).shape == (200,)


@pytest.mark.parametrize("contamination", [0.0, 0.6, -0.1, "bogus", None])
def test_bad_contamination_is_a_clear_error(contamination):
    X = correlated_gaussian(n_samples=50)
    with pytest.raises(ValueError, match="contamination"):
        make_detector(contamination=contamination).fit(X)


def test_unfitted_detector_raises():
    from sklearn.exceptions import NotFittedError

    detector = make_detector()
    for method in (
        detector.predict,
        detector.decision_function,
        detector.score_samples,
    ):
        with pytest.raises(NotFittedError):
            method(np.zeros((2, 3)))
    assert not hasattr(detector, "offset_")


# ------------------------------------------------------------- support steps


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_support_steps_set_gross_outliers_aside():
    # 5 % of the rows sit 12 sd out in the first feature. Fitted on all rows,
    # they inflate that feature's decoder variance about eightfold
    # (1 + 0.05 * 12**2); the support steps drop them and the variance comes
    # back to that of the inliers, trimmed to their central three quarters.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    X[:20, 0] += 12.0
    once = make_detector(support_fraction=1.0).fit(X)
    trimmed = make_detector().fit(X)
    assert once.support_.all()
    assert not trimmed.support_[:20].any()
    assert once.noise_variance_[0] > 4.0
    assert 0.2 < trimmed.noise_variance_[0] < 1.2
    assert set(np.argsort(trimmed.score_samples(X))[:20]) == set(range(20))


def test_support_steps_stop_when_the_support_repeats():
    X = np.arange(20.0)[:, None]
    fits = []
    # Scores that do not depend on the model: the second step keeps the rows
    # of the first, so the steps have converged after one fit.
    support, converged = c_step(X, 15, lambda X: -X[:, 0], fits.append, 10)
    assert len(fits) == 1 and converged is None  # what fits.append returned
    np.testing.assert_array_equal(support, np.arange(20) < 15)
    # Scores that flip at each call: every step moves the support.
    flips = iter(range(100))
    c_step(X, 15, lambda X: X[:, 0] * (-1) ** next(flips), fits.append, 10)
    assert len(fits) == 1 + 10


def test_rare_values_of_a_binary_feature_do_not_outrank_gross_outliers():
    # A flag set on 3 % of the normal rows is constant on the support rows;
    # with only min_variance as its floor, a set flag would be the least
    # likely thing in the data. Floored at a sixteenth of the variance of a
    # rounding error on its grid (one step: g^2 / 12), a set flag costs at
    # most 12 * 16 / 2 = 96 nats, less than rows 10 sd out in three
    # features (over 3 * 100 / 2 = 150): those 10 are the 10 least likely.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3))
    flag = np.zeros(400)
    flag[rng.choice(np.arange(10, 400), 12, replace=False)] = 1.0
    X = np.column_stack([X, flag])
    X[:10, :3] += 10.0
    scores = VAEOutlierDetector(random_state=0, device=DEVICE).fit(X).score_samples(X)
    assert set(np.argsort(scores)[:10]) == set(range(10))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("support_fraction", [0.5, 0.75, 0.9])
def test_support_is_the_requested_fraction_of_rows(support_fraction):
    X = correlated_gaussian(n_samples=201)
    detector = make_detector(support_fraction=support_fraction, max_iter=5).fit(X)
    assert detector.support_.shape == (201,)
    assert detector.support_.dtype == bool
    assert detector.support_.sum() == np.ceil(support_fraction * 201)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_support_fraction_one_is_a_single_fit_on_all_rows():
    from skvae import GaussianVAE

    X = correlated_gaussian(n_samples=200)
    detector = make_detector(
        support_fraction=1.0, n_components=2, learning_rate="constant"
    ).fit(X)
    # At a constant rate, as RANDOM_START (GaussianVAE before issue 14) has.
    vae = GaussianVAE(
        n_components=2,
        **{**SMALL, "random_state": 0, "device": DEVICE, **RANDOM_START},
    ).fit(X)
    assert detector.n_iter_ == vae.n_iter_
    np.testing.assert_array_equal(detector.score_samples(X), vae.score_samples(X))


def test_partial_fit_trains_each_later_chunk_on_its_most_likely_rows():
    X = correlated_gaussian(n_samples=400)
    first, second = X[:200], X[200:]
    detector = make_detector(support_fraction=0.75)
    assert detector.partial_fit(first).support_.all()
    before = detector.score_samples(second)
    detector.partial_fit(second)
    expected = np.zeros(200, dtype=bool)
    expected[np.argsort(-before)[:150]] = True
    np.testing.assert_array_equal(detector.support_, expected)
    assert detector.n_iter_ == 2
    # And the second epoch trained on those rows alone: a detector that keeps
    # every row, given the first chunk and then only the expected rows of the
    # second, is the same model (scores equal to the last bit; 25 nats apart
    # when the epoch trains on the whole second chunk).
    reference = make_detector(support_fraction=1.0)
    reference.partial_fit(first).partial_fit(second[expected])
    np.testing.assert_array_equal(detector.score_samples(X), reference.score_samples(X))


@pytest.mark.parametrize("contamination", ["auto", 0.1])
def test_partial_fit_sets_the_threshold_on_all_rows_given(contamination):
    # A one-row last chunk set offset_ on its own score: 84 % of the rows
    # were flagged. With fewer rows than the sample holds, the threshold is
    # that of all the rows given, scored by the final model.
    X = correlated_gaussian(n_samples=300)
    detector = VAEOutlierDetector(contamination=contamination, random_state=0)
    detector.partial_fit(X[:299]).partial_fit(X[299:])
    scores = detector.score_samples(X)
    if contamination == "auto":
        lower, upper = np.percentile(scores, [25.0, 75.0])
        expected = lower - 4.0 * (upper - lower)
    else:
        expected = np.percentile(scores, 10.0)
    assert_allclose(detector.offset_, expected, rtol=1e-12)
    flagged = (detector.predict(X) == -1).mean()
    # With "auto", 7 of these 300 clean rows (2.3 %), as a fit on them flags.
    assert flagged <= 0.03 if contamination == "auto" else flagged == 0.1


def test_fit_sets_the_threshold_on_its_own_rows_and_keeps_none():
    X = correlated_gaussian(n_samples=300)
    detector = VAEOutlierDetector(contamination=0.1, random_state=0)
    detector.partial_fit(X[:200]).fit(X[200:])
    fitted = np.percentile(detector.score_samples(X[200:]), 10.0)
    assert_allclose(detector.offset_, fitted, rtol=1e-12)
    assert detector._threshold_rows is None
    # A partial_fit after it: the threshold of the rows given since (one),
    # averaged with the fit's, weighted by their rows (1 and 100).
    detector.partial_fit(X[:1])
    expected = (100 * fitted + detector.score_samples(X[:1])[0]) / 101
    assert_allclose(detector.offset_, expected, rtol=1e-12)


def test_partial_fit_after_set_params_contamination_drops_the_fits_threshold():
    # The fit's offset_ is a quantile of another contamination: averaging it
    # in moved the threshold towards 10 % where 20 % was asked for.
    X = correlated_gaussian(n_samples=300)
    detector = VAEOutlierDetector(contamination=0.1, random_state=0).fit(X[:100])
    fitted = detector.offset_
    detector.set_params(contamination=0.2).partial_fit(X[100:])
    assert_allclose(
        detector.offset_,
        np.percentile(detector.score_samples(X[100:]), 20.0),
        rtol=1e-12,
    )
    # Back to the fit's contamination: its threshold counts again.
    detector.set_params(contamination=0.1).partial_fit(X[:1])
    sample = np.percentile(detector.score_samples(np.vstack([X[100:], X[:1]])), 10.0)
    assert_allclose(detector.offset_, (100 * fitted + 201 * sample) / 301, rtol=1e-12)


def test_partial_fit_of_a_model_fitted_before_the_sample_was_kept():
    # A model saved before the threshold's sample existed has offset_ and
    # support_ only: a one-row chunk must not set the threshold alone
    # (it flagged 91 % of the rows).
    X = correlated_gaussian(n_samples=500)
    detector = VAEOutlierDetector(random_state=0).fit(X)
    for name in ("_fit_offset", "_fit_rows", "_threshold_rows", "_threshold_seen"):
        delattr(detector, name)
    fitted = detector.offset_
    detector.partial_fit(X[:1])
    expected = (500 * fitted + detector.score_samples(X[:1])[0]) / 501
    assert_allclose(detector.offset_, expected, rtol=1e-12)
    assert (detector.predict(X) == -1).mean() < 0.02


def test_partial_fit_threshold_past_the_sample_size():
    X = correlated_gaussian(n_samples=3 * THRESHOLD_ROWS + 1, seed=5)
    detector = VAEOutlierDetector(contamination=0.1, random_state=0)
    for chunk in (X[:1000], X[1000:2000], X[2000:3000], X[3000:]):
        detector.partial_fit(chunk)
    assert detector._threshold_rows.shape == (THRESHOLD_ROWS, 3)
    flagged = (detector.predict(X) == -1).mean()
    assert 0.08 < flagged < 0.12


def test_reservoir_sample_is_uniform_whatever_the_chunks():
    # Each of 50 rows, given in chunks of 7, 1, 30 and 12, is in a sample
    # of 10 with probability 1/5.
    X = np.arange(50.0)[:, None]
    counts = np.zeros(50)
    for seed in range(3000):
        rng = np.random.default_rng(seed)
        sample, seen = None, 0
        for chunk in np.split(X, [7, 8, 38]):
            sample = reservoir_sample(sample, seen, chunk, 10, rng)
            seen += len(chunk)
        assert len(np.unique(sample)) == 10
        counts[sample[:, 0].astype(int)] += 1
    # 3000 draws of 10 rows among 50: each row 600 times, give or take 22.
    # A chi-square test catches slots drawn on [0, t] instead of [0, t - 1]
    # (p = 6e-6), which a bound on the largest deviation let through.
    assert chisquare(counts).pvalue > 1e-3


@pytest.mark.parametrize("support_fraction", [0.0, 1.5, -0.2, "auto", None])
def test_bad_support_fraction_is_a_clear_error(support_fraction):
    X = correlated_gaussian(n_samples=50)
    with pytest.raises(ValueError, match="support_fraction"):
        make_detector(support_fraction=support_fraction).fit(X)


def test_default_detector_is_fitted_in_closed_form():
    # No hidden layer, one latent dimension per feature, init="linear": the
    # model is a Gaussian, fitted in closed form, no epoch run. Each support
    # step refits the mean and the shrunk covariance on the rows most likely
    # under the fit before (three quarters of the rows, until they repeat), and the
    # scores are that Gaussian's exact log-density, in the units of X.
    X = correlated_gaussian(n_samples=400, seed=3)
    X[:8] += [3.0, -300.0, 0.02]  # against the correlation
    detector = VAEOutlierDetector(random_state=0, device=DEVICE).fit(X)
    assert detector.n_iter_ == 0
    assert detector.loss_curve_ == []
    assert detector.best_loss_ is None
    assert detector.init_ == "linear"
    shrinkage = detector.shrinkage  # the default, a number
    support = np.ones(len(X), dtype=bool)
    for _ in range(10):  # until the support repeats, at most ten steps
        scores = gaussian_log_density(X, support, shrinkage)
        most_likely = np.zeros(len(X), dtype=bool)
        most_likely[np.argsort(-scores, kind="stable")[:300]] = True
        if np.array_equal(most_likely, support):
            break
        support = most_likely
    np.testing.assert_array_equal(detector.support_, support)
    expected = gaussian_log_density(X, support, shrinkage)
    np.testing.assert_allclose(detector.score_samples(X), expected, atol=1e-6)
    assert set(np.argsort(expected)[:8]) == set(range(8))


@pytest.mark.slow
@pytest.mark.parametrize("curved", [True, False])
def test_auto_init_picks_the_network_only_on_a_curved_manifold(curved):
    # The label-free rule: the closed-form Gaussian start and a randomly
    # started network compete on held-out rows (early stopping's); the
    # network is kept only if it is clearly more likely there. One fit on
    # all rows: the rule is applied there, before any support step.
    rng = np.random.default_rng(1)
    if curved:
        X = two_factor_manifold(2000, seed=1)
    else:
        X = rng.normal(size=(2000, 12)) @ rng.normal(size=(12, 12))
    detector = VAEOutlierDetector(
        init="auto",
        hidden_layer_sizes=(64, 64),
        early_stopping="auto",
        support_fraction=1.0,
        random_state=0,
        device=DEVICE,
    ).fit(X)
    assert detector.init_ == ("random" if curved else "linear")


def test_default_model_is_the_maximum_likelihood_gaussian():
    X = correlated_gaussian(n_samples=2000, seed=3)
    detector = VAEOutlierDetector(
        support_fraction=1.0, shrinkage=0.0, random_state=0, device=DEVICE
    ).fit(X)
    assert detector.module_.n_components == X.shape[1]
    expected = gaussian_log_density(X, slice(None), 0.0)
    np.testing.assert_allclose(detector.score_samples(X), expected, atol=1e-6)
    # The scores are exact: importance draws play no part.
    fewer = VAEOutlierDetector(
        support_fraction=1.0,
        shrinkage=0.0,
        n_importance_samples=1,
        random_state=1,
        device=DEVICE,
    ).fit(X)
    np.testing.assert_allclose(fewer.score_samples(X), expected, atol=1e-6)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_networks_are_still_trained():
    # The closed form is for a Gaussian: hidden layers train as before.
    X = correlated_gaussian(n_samples=200)
    detector = make_detector(init="linear", max_iter=3)
    assert detector.fit(X).n_iter_ > 0


def test_missing_values_are_fitted_in_closed_form_too():
    # With missing entries the Gaussian is fitted by EM on the observed ones
    # (each support step's too), still without epochs.
    X = correlated_gaussian(n_samples=200)
    X_missing = X.copy()
    X_missing[::7, 1] = np.nan
    detector = VAEOutlierDetector(random_state=0, device=DEVICE).fit(X_missing)
    assert detector.n_iter_ == 0
    assert np.isfinite(detector.score_samples(X_missing)).all()
    # Where EM would cost more than its budget, it trains as before.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("skvae._incomplete.EM_BUDGET", 1.0)
        trained = VAEOutlierDetector(max_iter=3, random_state=0, device=DEVICE)
        with pytest.warns(ConvergenceWarning):
            trained.fit(X_missing)
    assert trained.n_iter_ > 0


def _clean_incomplete_gaussian(n_samples, rate, seed):
    """Correlated Gaussian rows in mixed units, entries missing at random."""
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(6, 6))
    X = rng.multivariate_normal(np.zeros(6), factor @ factor.T + np.eye(6), n_samples)
    X = X * [1.0, 1e3, 1e-3, 5.0, 0.2, 50.0]
    X[rng.random(X.shape) < rate] = np.nan
    return X[~np.isnan(X).all(1)]


def test_incomplete_rows_rank_by_their_tail_not_by_what_they_lack():
    # Clean rows: however many entries a row lacks, its score is drawn from
    # the complete rows' distribution. log p(x_o) instead rises or falls by
    # the units of the entries missing (here by tens of nats).
    X = _clean_incomplete_gaussian(6000, 0.3, 0)
    # Seeded: EM completes the rows with random draws, and unseeded fits put
    # the rows lacking four entries 0.40 to 0.52 from the complete ones.
    detector = VAEOutlierDetector(random_state=0, device=DEVICE).fit(X)
    scores = detector.score_samples(X)
    log_px = detector._log_likelihood(X)
    n_observed = (~np.isnan(X)).sum(1)
    complete = np.median(scores[n_observed == 6])
    for k in (2, 3, 4, 5):
        assert abs(np.median(scores[n_observed == k]) - complete) < 0.5
    assert abs(np.median(log_px[n_observed == 3]) - complete) > 5
    # So the default threshold flags about as many of each.
    flagged = detector.predict(X) == -1
    assert flagged.mean() < 0.02
    assert flagged[n_observed <= 3].mean() < 0.03
    # A row far out on the entries it has is flagged, however many it lacks.
    far = np.full((3, 6), np.nan)
    far[0, :2], far[1, :4], far[2] = (
        8 * np.nanstd(X, 0)[:2],
        8 * np.nanstd(X, 0)[:4],
        8 * np.nanstd(X, 0),
    )
    assert (detector.predict(far) == -1).all()


@pytest.mark.parametrize("standardize", [True, "marginal"])
def test_scores_of_incomplete_rows_follow_the_units_as_complete_ones_do(standardize):
    # Scaling a feature by c shifts every row's score by -log c, whether
    # that entry is missing or not: the ranking does not depend on units.
    # Gaussianized, the missing entry's Jacobian is taken at its conditional
    # mean: without it, the shift would depend on the row.
    X = _clean_incomplete_gaussian(800, 0.3, 1)
    params = dict(standardize=standardize, device=DEVICE)
    detector = VAEOutlierDetector(**params).fit(X)
    c = np.array([1.0, 1.0, 1e4, 1.0, 1.0, 1.0])
    scaled = VAEOutlierDetector(**params).fit(X * c)
    assert_allclose(
        scaled.score_samples(X * c),
        detector.score_samples(X) - np.log(1e4),
        rtol=1e-6,
        atol=1e-6,
    )
    assert_array_equal(scaled.support_, detector.support_)


@pytest.mark.parametrize("standardize", [True, "marginal"])
def test_complete_rows_score_their_log_likelihood(standardize):
    X = _clean_incomplete_gaussian(500, 0.2, 2)
    detector = VAEOutlierDetector(standardize=standardize, device=DEVICE).fit(X)
    complete = X[~np.isnan(X).any(1)]
    assert_allclose(
        detector.score_samples(complete), detector._log_likelihood(complete), rtol=1e-12
    )
    # The formula for incomplete rows gives a complete row its log-likelihood.
    gaussian = detector._marginal_gaussian()
    assert_allclose(
        detector._tail_equivalent_scores(complete, *gaussian),
        detector._log_likelihood(complete),
        rtol=1e-9,
    )
    # score stays the mean log-likelihood of the observed entries.
    assert detector.score(X) == pytest.approx(detector._log_likelihood(X).mean())
    assert detector.score(X) != pytest.approx(detector.score_samples(X).mean())


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_networks_score_incomplete_rows_by_their_observed_entries():
    X = _clean_incomplete_gaussian(300, 0.2, 3)
    with pytest.warns(UserWarning, match="fit got .* with missing entries") as record:
        detector = make_detector(max_iter=3).fit(X)
    assert record[0].filename == __file__
    assert detector._marginal_gaussian() is None
    with pytest.warns(UserWarning, match="not a Gaussian"):
        assert_allclose(detector.score_samples(X), detector._log_likelihood(X))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_networks_warn_that_incomplete_rows_do_not_compare():
    # Under a network, an incomplete row's log p(x_o) and its label move with
    # the units of the entries it lacks; each method that ranks rows says so,
    # at its caller. The Gaussian default ranks them on the scale of
    # complete rows and does not warn, nor do complete rows.
    X = correlated_gaussian(n_samples=200)
    rows = X[:20].copy()
    rows[:, 1] = np.nan
    detector = make_detector(max_iter=3).fit(X)
    for method in ("score_samples", "decision_function", "predict"):
        with pytest.warns(UserWarning, match=f"^{method} got 20 row") as record:
            getattr(detector, method)(rows)
        assert record[0].filename == __file__
    with pytest.warns(UserWarning, match="^partial_fit got 20 row") as record:
        detector.partial_fit(rows)
    assert record[0].filename == __file__
    # fit_predict warns once, as itself, at its caller.
    with pytest.warns(UserWarning) as record:
        labels = make_detector(max_iter=3).fit_predict(np.vstack([X, rows]))
    missing = [w for w in record if "missing entries" in str(w.message)]
    assert len(missing) == 1 and str(missing[0].message).startswith("fit_predict got")
    assert missing[0].filename == __file__
    assert labels.shape == (220,)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        detector.predict(X)
        VAEOutlierDetector(random_state=0, device=DEVICE).fit(X).predict(rows)


def test_as_many_latent_dimensions_as_support_rows_warns():
    # 30 rows of 200 features: the default's full covariance, fitted to the
    # 23 support rows, flags every new row of the same distribution. Fewer
    # latent dimensions than support rows do not warn.
    rng = np.random.default_rng(0)
    A = rng.normal(size=(200, 200)) / np.sqrt(200)
    X, X_new = rng.normal(size=(30, 200)) @ A, rng.normal(size=(500, 200)) @ A
    with pytest.warns(UserWarning, match="200 latent dimensions to 23 support") as r:
        detector = VAEOutlierDetector(random_state=0, device=DEVICE).fit(X)
    assert r[0].filename == __file__  # points at the caller of fit
    assert (detector.predict(X_new) == -1).mean() > 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        # The network of five latent dimensions trains (it may not converge).
        warnings.simplefilter("ignore", ConvergenceWarning)
        narrow = VAEOutlierDetector(n_components=5, random_state=0, device=DEVICE)
        narrow.fit(X)
        VAEOutlierDetector(random_state=0, device=DEVICE).fit(X[:, :20])
        diagonal = VAEOutlierDetector(shrinkage=1.0, random_state=0, device=DEVICE)
        diagonal.fit(X)
    assert (narrow.predict(X_new) == -1).mean() < 0.2
    assert (diagonal.predict(X_new) == -1).mean() < 0.2


@pytest.mark.parametrize("n_rows", [1, 2])
def test_too_few_rows_to_warn_of_are_not_told_to_lower_n_components(n_rows):
    # n_components below one or two support rows is no advice at all.
    X = np.random.default_rng(0).normal(size=(n_rows, 4))
    with pytest.warns(UserWarning, match="latent dimensions to") as record:
        VAEOutlierDetector(random_state=0, device=DEVICE).fit(X)
    message = str(record[0].message)
    assert "n_components" not in message and "or more rows" in message
