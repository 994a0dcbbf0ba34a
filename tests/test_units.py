"""The map between the units of X and the model's: standardizing and Gaussianizing."""

import numpy as np
import pytest
from conftest import DEVICE
from numpy.testing import assert_allclose
from scipy import stats

from skvae import GaussianVAE, _units
from skvae._units import degaussianize, fit_marginal_knots, gaussianize

# The closed-form start on Gaussianized features, a linear decoder.
LINEAR_MARGINAL = dict(
    standardize="marginal",
    hidden_layer_sizes=(),
    init="linear",
    device=DEVICE,
    random_state=0,
)


def skewed(n_samples=1500, seed=0):
    """A lognormal, a two-valued dequantized and a zero-inflated column."""
    rng = np.random.default_rng(seed)
    lognormal = rng.lognormal(size=n_samples)
    binary = rng.integers(0, 2, n_samples) + rng.uniform(size=n_samples)
    zeros = np.where(rng.random(n_samples) < 0.4, 0.0, rng.gamma(2.0, size=n_samples))
    X = np.column_stack([lognormal, binary, zeros])
    return (X - X.mean(0)) / X.std(0)


def test_gaussianized_columns_are_close_to_standard_normal():
    Z = skewed()
    T, _ = gaussianize(Z, fit_marginal_knots(Z))
    for column in T[:, :2].T:  # continuous columns
        assert abs(column.mean()) < 0.05 and abs(column.std() - 1) < 0.1
        assert stats.kstest(column, "norm").statistic < 0.05
    # A point mass stays one: the repeated zeros map to one value, the
    # median of the mass under the smoothed distribution.
    zeros = T[:, 2][Z[:, 2] == Z[:, 2].min()]
    assert np.ptp(zeros) == 0 and stats.norm.cdf(zeros[0]) == pytest.approx(
        0.2, abs=0.05
    )


def test_gaussianizing_is_inverted_exactly():
    Z = skewed()
    knots = fit_marginal_knots(Z)
    wide = np.vstack([Z, [[-50.0, 40.0, 1e3]]])  # beyond the knots, too
    assert_allclose(degaussianize(gaussianize(wide, knots)[0], knots), wide, atol=1e-9)


@pytest.mark.parametrize("column", [0, 1, 2])
def test_gaussianized_density_integrates_to_one(column):
    """N(G(z)) G'(z) is a density: the log-Jacobian is right, tails included."""
    Z = skewed()
    knots = fit_marginal_knots(Z)
    # Dense where the data are, out to 1e5 standard deviations for the
    # Cauchy tails (the mass beyond is below 1e-7).
    tail = np.geomspace(60, 1e5, 200_001)
    grid = np.concatenate([-tail[::-1], np.linspace(-60, 60, 600_001)[1:-1], tail])
    T, log_slope = gaussianize(np.tile(grid[:, None], (1, 3)), knots)
    density = np.exp(stats.norm.logpdf(T[:, column]) + log_slope[:, column])
    assert_allclose(np.trapezoid(density, grid), 1.0, atol=1e-4)


def test_knots_of_repeated_values_are_not_rounding_errors_apart():
    # np.quantile lands 1e-12 off repeated values; those copies must not
    # become knots, whose segment slopes would be ratios of rounding errors.
    rng = np.random.default_rng(0)
    column = rng.poisson(30.0, size=(450, 1)).astype(float)
    Z = (column - column.mean()) / column.std()
    (knots,) = fit_marginal_knots(Z)
    values = np.unique(Z)
    gap = np.diff(values).min()
    assert np.diff(knots[:, 0]).min() > 0.1 * gap
    # No value of the data is on a knot, nor a value between two of them
    # (the integers the Poisson draws missed): rounding cannot move such a
    # row into another segment.
    grid = np.arange(column.min() - 1, column.max() + 2)
    grid = (grid - column.mean()) / column.std()
    distance = np.abs(grid[:, None] - knots[None, :, 0]).min(1)
    assert distance.min() > 0.01 * gap


def test_equal_values_whose_std_rounds_above_zero_get_the_identity():
    # Seven 0.1s have a std of 1e-17: one centre, not an index error.
    Z = np.column_stack([np.full(7, 0.1), np.arange(7.0)])
    assert Z[:, 0].std() > 0
    (constant, _) = fit_marginal_knots(Z)
    assert_allclose(constant, [[-1.0, -1.0], [1.0, 1.0]])


def test_one_far_value_does_not_merge_the_others():
    # Quantiles are values of the data only within a rounding error of the
    # gap they lie in, not of the data's extent, which one sentinel widens.
    rng = np.random.default_rng(3)
    column = np.append(rng.normal(size=2000), 1e9)
    Z = ((column - column.mean()) / column.std())[:, None]
    T, _ = gaussianize(Z, fit_marginal_knots(Z))
    assert 0.8 < T[:-1, 0].std() < 1.1


def test_float32_rows_score_as_their_float64_values_with_gaussianized_features():
    rng = np.random.default_rng(2)
    X = rng.poisson([3.0, 20.0], size=(400, 2)) + rng.normal(size=(400, 2)) * [0, 1]
    vae = GaussianVAE(**LINEAR_MARGINAL).fit(X)
    assert_allclose(
        vae.score_samples(X.astype(np.float32)), vae.score_samples(X), atol=1e-4
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_marginal_scores_of_discrete_data_follow_any_scaling():
    # Rows at values of the data, and held-out rows at values the training
    # rows lack (the midpoint of two that they have), must not sit on a knot
    # either side of which rounding could put them.
    rng = np.random.default_rng(1)
    X = rng.poisson([4.0, 12.0, 40.0], size=(300, 3)).astype(float)
    X = X[(X[:, 0] % 2 == 0)]  # odd values only in the held-out rows
    held_out = rng.poisson([4.0, 12.0, 40.0], size=(200, 3)).astype(float)
    vae = GaussianVAE(**LINEAR_MARGINAL).fit(X)
    for c in [3.0, 0.1, 2.54]:
        scaled = GaussianVAE(**LINEAR_MARGINAL).fit(c * X)
        for rows in (X, held_out):
            assert_allclose(
                scaled.score_samples(c * rows),
                vae.score_samples(rows) - 3 * np.log(c),
                rtol=1e-6,
            )


@pytest.mark.parametrize("broad", [_units.MARGINAL_BROAD_WEIGHT, 1e-30])
def test_knots_are_the_normal_quantiles_of_the_smoothed_distribution(
    monkeypatch, broad
):
    """t = Phi^-1(F(z)) at every knot, F the kernel and Cauchy mixture, tails too.

    With at most ``MARGINAL_CENTRES`` rows the centres are the distinct
    values, weighted by their counts; F and 1 - F are evaluated here with
    scipy's normal and Cauchy distributions, each in its own tail. With a
    negligible Cauchy weight, the kernels' own tails set t beyond the data,
    down to values that 1 - Phi(u) would round to zero.
    """
    monkeypatch.setattr(_units, "MARGINAL_BROAD_WEIGHT", broad)
    rng = np.random.default_rng(0)
    column = np.round(rng.standard_t(3, size=300), 1)  # heavy tails, ties
    (knots,) = fit_marginal_knots(column[:, None])
    centres, counts = np.unique(column, return_counts=True)
    iqr = np.subtract(*np.quantile(column, [0.75, 0.25]))
    bandwidth = 0.9 * min(column.std(), iqr / 1.349) * column.size**-0.2
    u = (knots[:, :1] - centres) / bandwidth
    weights = (1 - broad) * counts / counts.sum()
    cdf = stats.norm.cdf(u) @ weights + broad * stats.cauchy.cdf(knots[:, 0])
    sf = stats.norm.sf(u) @ weights + broad * stats.cauchy.sf(knots[:, 0])
    expected = np.where(cdf < sf, stats.norm.ppf(cdf), stats.norm.isf(sf))
    assert knots[:, 1].min() < -6 and knots[:, 1].max() > 6  # into the tails
    assert_allclose(knots[:, 1], expected, rtol=1e-12, atol=1e-12)


def test_constant_column_is_left_alone():
    Z = np.column_stack([np.zeros(50), np.random.default_rng(0).normal(size=50)])
    T, log_slope = gaussianize(Z, fit_marginal_knots(Z))
    assert_allclose(T[:, 0], 0.0) and assert_allclose(log_slope[:, 0], 0.0)


def test_missing_entries_pass_through():
    Z = skewed()
    knots = fit_marginal_knots(Z)
    Z[::3, 1] = np.nan
    T, log_slope = gaussianize(Z, knots)
    assert np.isnan(T[::3, 1]).all() and (log_slope[::3, 1] == 0).all()
    assert np.isfinite(T[1::3]).all()


def test_marginal_model_density_integrates_to_one_in_the_units_of_x():
    """score_samples of a Gaussianized model is a density over x."""
    rng = np.random.default_rng(3)
    X = rng.gamma(2.0, 3.0, size=(400, 1)) + 100.0
    vae = GaussianVAE(
        n_components=None,
        hidden_layer_sizes=(),
        standardize="marginal",
        init="linear",
        max_iter=20,
        device=DEVICE,
        random_state=0,
    ).fit(X)
    grid = np.linspace(50, 300, 100_001)
    density = np.exp(vae.score_samples(grid[:, None]))
    assert_allclose(np.trapezoid(density, grid), 1.0, atol=2e-3)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_marginal_scores_shift_by_minus_d_log_c_when_x_is_scaled():
    X = skewed(400) * [1.0, 5.0, 0.1]
    params = dict(standardize="marginal", max_iter=3, device=DEVICE, random_state=0)
    vae = GaussianVAE(**params).fit(X)
    scaled = GaussianVAE(**params).fit(1024.0 * X)
    assert_allclose(
        scaled.score_samples(1024.0 * X),
        vae.score_samples(X) - 3 * np.log(1024.0),
        rtol=1e-9,
    )


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("standardize", [True, "marginal"])
def test_inverse_transform_of_a_linear_decoder_is_its_affine_map(standardize):
    # The decoder mean A z + c, mapped back to the units of X: standardizing
    # (and Gaussianizing) the result gives A z + c again.
    X = skewed(600) * 10 + 50
    vae = GaussianVAE(
        standardize=standardize,
        hidden_layer_sizes=(),
        n_components=2,
        max_iter=5,
        device=DEVICE,
        random_state=0,
    ).fit(X)
    assert vae.module_.has_linear_decoder
    Z = np.random.default_rng(1).normal(size=(7, 2))
    A, c = (t.detach().double().cpu().numpy() for t in vae.module_.linear_decoder())
    internal = (vae.inverse_transform(Z) - vae.mean_) / vae.scale_
    if standardize == "marginal":
        internal = gaussianize(internal, vae.marginal_knots_)[0]
    assert_allclose(internal, Z @ A.T + c, rtol=1e-5, atol=1e-5)


def test_auto_gaussianizes_skewed_data_and_not_gaussian_data():
    params = dict(standardize="auto", max_iter=1, device=DEVICE, random_state=0)
    rng = np.random.default_rng(4)
    gaussian = rng.normal(size=(1000, 3)) @ rng.normal(size=(3, 3))
    assert GaussianVAE(**params).fit(gaussian).marginal_knots_ is None
    assert GaussianVAE(**params).fit(skewed(1000)).marginal_knots_ is not None


def test_inverse_transform_and_sample_come_back_through_the_map():
    X = skewed(600) * 10 + 50
    vae = GaussianVAE(
        standardize="marginal", max_iter=30, device=DEVICE, random_state=0
    ).fit(X)
    draws = vae.sample(20_000)
    # Marginals of the draws follow the data's continuous columns.
    for j in range(2):
        assert stats.ks_2samp(draws[:, j], X[:, j]).statistic < 0.15
    assert vae.inverse_transform(vae.transform(X[:5])).shape == (5, 3)
