"""Units: the standardization of the data and its log-Jacobian, on numpy arrays.

The model works on standardized data; everything the user sees is in the
units of X. This module holds the map between the two, free of overflow for
any finite X, and processes X in chunks of rows so that its temporaries stay
small whatever the size of X.
"""

import numpy as np
from scipy.special import ndtr, ndtri
from sklearn.preprocessing import StandardScaler
from sklearn.utils import gen_batches

# Elements processed at a time (rows x features), to bound the float64
# temporaries of the standardization whatever the width of X.
CHUNK_ELEMENTS = 2**20
# Standardized values are clipped to these magnitudes. Far beyond any training
# row, this keeps squared residuals finite (float32 in training, float64 in
# scoring), so such rows score finite and very low, while ordinary data and the
# exact scaling equivariance of the scores are untouched.
STANDARDIZED_BOUND = {np.dtype(np.float32): 1e15, np.dtype(np.float64): 1e100}


def row_chunks(X):
    """Slices of rows of X holding about ``CHUNK_ELEMENTS`` values each."""
    return gen_batches(X.shape[0], max(1, CHUNK_ELEMENTS // max(X.shape[1], 1)))


def count_observed(X):
    """Observed (non-NaN) entries per feature, counted in chunks of rows."""
    counts = np.zeros(X.shape[1], dtype=np.int64)
    for rows in row_chunks(X):
        counts += (~np.isnan(X[rows])).sum(0)
    return counts


def check_observed_features(observed):
    """Raise if a feature has no observed value: nothing can be learned of it."""
    empty = np.flatnonzero(observed == 0)
    if empty.size:
        raise ValueError(
            f"Features {empty.tolist()} of X have no observed value (every entry "
            "is missing); "
            "their scale and decoder variance cannot be estimated. Drop them, or "
            "fill them first, e.g. with SimpleImputer(keep_empty_features=True)."
        )


def check_unstandardized_range(X):
    """Raise if X is too large to train on in float32 without standardizing."""
    bound = STANDARDIZED_BOUND[np.dtype(np.float32)]
    largest = float(np.nanmax(np.abs(X), initial=0.0))
    if largest > bound:
        raise ValueError(
            f"X has values of magnitude {largest:.3g}, too large to train on "
            f"in float32 without standardization (the limit is {bound:.0e}). "
            "Use standardize=True, or rescale X."
        )


def feature_moments(X):
    """Per-feature mean and spread of X, free of overflow for any finite X.

    Each feature is first divided by the power of two just above its largest
    magnitude (exact, so the statistics are exactly equivariant under scaling
    by powers of two and never overflow). Missing entries (NaN) are ignored.
    Works in chunks of rows, as
    :meth:`~sklearn.preprocessing.StandardScaler.partial_fit` does.

    Returns
    -------
    mean, spread : ndarray of shape (n_features,)
        The mean and standard deviation of each feature's observed entries.
    constant : ndarray of shape (n_features,) of bool
        The features whose observed values are all equal.
    magnitude : ndarray of shape (n_features,)
        Each feature's largest magnitude rounded down to a power of two: the
        scale :meth:`~skvae.GaussianVAE.fit` gives a constant feature.
    """
    largest = np.zeros(X.shape[1])
    lowest = np.full(X.shape[1], np.inf)
    highest = np.full(X.shape[1], -np.inf)
    for rows in row_chunks(X):
        chunk = X[rows]
        np.fmax(largest, np.nanmax(np.abs(chunk), axis=0, initial=0.0), out=largest)
        np.fmin(lowest, np.nanmin(chunk, axis=0, initial=np.inf), out=lowest)
        np.fmax(highest, np.nanmax(chunk, axis=0, initial=-np.inf), out=highest)
    exponent = np.frexp(largest)[1]
    scaler = StandardScaler()
    for rows in row_chunks(X):
        scaler.partial_fit(np.ldexp(X[rows], -exponent))
    # The spread itself, not scaler.scale_: StandardScaler calls a feature
    # constant when its spread is below what rounding its mean could make,
    # a bound that grows with the rows' count and the feature's offset
    # (1e-3 around 1e9 on 20,000 rows), so that a real, small spread
    # would be scaled as if there were none.
    spread = np.sqrt(scaler.var_)
    constant = (lowest >= highest) | (spread == 0.0)
    # Divided rows lie in (-1, 1): 0.5 is the magnitude rounded down.
    return (
        np.ldexp(scaler.mean_, exponent),
        np.ldexp(spread, exponent),
        constant,
        np.ldexp(0.5, exponent),
    )


def standardize_into(out, X, mean, scale, order=None, knots=None):
    """Write the standardized rows of X (in ``order``, if given) into ``out``.

    With ``knots`` (:func:`fit_marginal_knots`), each standardized feature is
    then Gaussianized. Values are clipped to ``STANDARDIZED_BOUND`` of
    ``out``'s dtype and missing entries set to 0, the mean of standardized
    data. Returns the boolean mask of observed entries, or None when no entry
    is missing.
    """
    bound = STANDARDIZED_BOUND[out.dtype]
    observed = None
    with np.errstate(over="ignore"):  # overflow lands on the bound
        for rows in row_chunks(X):
            chunk = X[rows] if order is None else X[order[rows]]
            block = np.clip((chunk - mean) / scale, -bound, bound)
            if knots is not None:
                block = np.clip(gaussianize(block, knots)[0], -bound, bound)
            missing = np.isnan(block)
            if missing.any():
                if observed is None:
                    observed = np.ones(X.shape, dtype=bool)
                observed[rows] = ~missing
                block[missing] = 0.0
            out[rows] = block
    return observed


def unstandardize(X, mean, scale, knots=None):
    """Back to the units of the data; beyond float64's range, its largest value.

    With ``knots``, X is first mapped back through the Gaussianizing map.
    """
    big = np.finfo(np.float64).max
    if knots is not None:
        X = degaussianize(X, knots)
    with np.errstate(over="ignore"):
        return np.clip(X * scale + mean, -big, big)


def log_jacobian(scale, observed_fraction=None):
    """Mean log|det| of the standardizing map of a row, in nats.

    ``sum(log scale)`` for a complete row; with ``observed_fraction`` (per
    feature, the fraction of rows in which it is observed), the mean over rows
    of the log|det| of the map of their observed entries.
    """
    if observed_fraction is None:
        return float(np.log(scale).sum())
    return float(observed_fraction @ np.log(scale))


def log_jacobian_rows(X, mean, scale, knots):
    """Per row of X, the log|det| of its observed entries' map to internal units.

    ``sum(log scale_d - log G_d'(z_d))`` over the observed entries d of the
    row, z the standardized row and G the Gaussianizing map; the
    log-density of a row in the units of X is the model's minus this.
    """
    out = np.zeros(X.shape[0])
    for rows in row_chunks(X):
        Z = (X[rows] - mean) / scale
        _, log_slope = gaussianize(Z, knots)
        observed = ~np.isnan(Z)
        out[rows] = observed @ np.log(scale) - log_slope.sum(1)
    return out


def variance_in_units(variance, scale):
    """A variance in internal units, in the units of the data, capped at float64's max."""
    with np.errstate(over="ignore", under="ignore"):  # scale ~ 1e±300
        return np.minimum(variance * scale**2, np.finfo(np.float64).max)


# The Gaussianizing transform (``standardize="marginal"``): each standardized
# feature is mapped through a piecewise-linear, increasing function G with
# G(z) ~ Phi^-1(F(z)), F a smoothed estimate of the feature's distribution.
# Kernel centres per feature: the data's quantiles, at most this many.
MARGINAL_CENTRES = 512
# Weight of a standard Cauchy distribution in F. Its tails, not a narrow
# kernel's, set the density far from the data: a held-out row 50 standard
# deviations out then costs a few nats per feature, not thousands.
MARGINAL_BROAD_WEIGHT = 0.01
# Beyond the data, knots at +-2^k standardized units up to this k, so that
# the piecewise-linear map follows the Cauchy tail.
MARGINAL_TAIL_OCTAVES = 24
# A quantile this fraction of a gap between two values of the data from one
# of them is that value (_centres).
MARGINAL_MERGE = 1e-9
# Knots are not at the centres, values of the data, but this fraction of
# the gap to either neighbour away, and as far beyond the first and last:
# a row at a value of the data, or at one the training rows lack (4, where
# they have 3 and 5), is then inside a segment, not on a knot, where any
# rounding (float32 input, the standardization of scaled data) would put it
# on either side, with either segment's slope.
INTERIOR_FRACTION = (3 - 5**0.5) / 2


def _cauchy_cdf(z):
    """F and 1 - F of the standard Cauchy distribution, without cancellation."""
    return np.arctan2(1.0, -z) / np.pi, np.arctan2(1.0, z) / np.pi


def _centres(values, levels):
    """The kernel centres at quantile ``levels`` of ``values``, and their counts.

    A quantile within ``MARGINAL_MERGE`` of the gap between the two values
    of the data it lies between, of one of them, is that value: np.quantile
    lands a rounding error (a fraction ``n eps`` of that gap) off the values
    it interpolates between, so that a repeated value of discrete data
    became two or three knots 1e-16 apart, whose segments' slopes were
    ratios of rounding errors (up to 5 where their neighbours were near 1):
    the log-Jacobian of every row at that value. Equal centres count as one.
    """
    ordered = np.sort(values)
    quantiles = np.quantile(ordered, levels)
    above = np.clip(np.searchsorted(ordered, quantiles), 1, ordered.size - 1)
    low, high = ordered[above - 1], ordered[above]
    nearest = np.where(quantiles - low <= high - quantiles, low, high)
    snapped = np.abs(quantiles - nearest) <= MARGINAL_MERGE * (high - low)
    return np.unique(np.where(snapped, nearest, quantiles), return_counts=True)


def fit_marginal_knots(Z):
    """Knots ``(z, t)`` of G for each column of standardized Z (NaN ignored).

    F is a mixture of a Gaussian kernel at each of up to ``MARGINAL_CENTRES``
    quantiles of the observed values (:func:`_centres`; bandwidth by
    Silverman's rule) and, with weight ``MARGINAL_BROAD_WEIGHT``, of a
    standard Cauchy distribution. The knots are two points between each
    two centres, ``INTERIOR_FRACTION`` of the gap from either, one as far
    beyond the first and the last centre, and points at
    ``+-2^k`` beyond the data; ``t = Phi^-1(F(z))`` there, strictly
    increasing. A constant column gets the identity. Returns a list of arrays
    of shape (n_knots, 2).
    """
    knots = []
    tail = 2.0 ** np.arange(1, MARGINAL_TAIL_OCTAVES + 1)
    for column in Z.T:
        values = column[~np.isnan(column)]
        n = values.size
        levels = np.linspace(0.0, 1.0, min(MARGINAL_CENTRES, n))
        # Equal values, whose std may still round above 0 (1e-17 for seven
        # 0.1s): one centre, and nothing to map.
        centres, counts = _centres(values, levels) if n > 1 else (values, [1])
        if centres.size < 2:
            knots.append(np.array([[-1.0, -1.0], [1.0, 1.0]]))
            continue
        spread = values.std()
        iqr = np.subtract(*np.quantile(values, [0.75, 0.25]))
        scale = min(spread, iqr / 1.349) if iqr > 0 else spread
        bandwidth = 0.9 * scale * n ** (-0.2)
        reach = 6.0 * bandwidth
        gaps = np.diff(centres)
        points = np.concatenate(
            [
                centres[:-1] + INTERIOR_FRACTION * gaps,
                centres[1:] - INTERIOR_FRACTION * gaps,
                [centres[0] - INTERIOR_FRACTION * gaps[0]],
                [centres[-1] + INTERIOR_FRACTION * gaps[-1]],
                centres[0] - reach - tail[tail > 0] + 1.0,
                centres[-1] + reach + tail - 1.0,
            ]
        )
        points.sort()
        # In probabilities, not logs: the Cauchy part keeps both F and 1 - F
        # above 1e-10 at every knot, far from underflow.
        weights = counts / counts.sum() * (1.0 - MARGINAL_BROAD_WEIGHT)
        u = (points[:, None] - centres[None, :]) / bandwidth
        broad_cdf, broad_sf = _cauchy_cdf(points)
        # Phi(u) = 1 - Phi(-u): one evaluation of the smaller tail gives
        # both, exactly where it matters (the tail), at half the cost.
        smaller = ndtr(-np.abs(u))
        below = u < 0
        cdf = np.where(below, smaller, 1.0 - smaller) @ weights
        sf = np.where(below, 1.0 - smaller, smaller) @ weights
        cdf += MARGINAL_BROAD_WEIGHT * broad_cdf
        sf += MARGINAL_BROAD_WEIGHT * broad_sf
        t = np.where(cdf < sf, ndtri(cdf), -ndtri(sf))
        keep = np.concatenate([[True], np.diff(t) > 0])  # strictly increasing
        knots.append(np.column_stack([points[keep], t[keep]]))
    return knots


def _piecewise(values, xs, ys):
    """The piecewise-linear map through (xs, ys), linear beyond both ends, and its log slope."""
    slopes = np.diff(ys) / np.diff(xs)
    segment = np.clip(np.searchsorted(xs, values, side="right") - 1, 0, len(slopes) - 1)
    out = ys[segment] + slopes[segment] * (values - xs[segment])
    return out, np.log(slopes)[segment]


def gaussianize(Z, knots):
    """G applied to each column of standardized Z, and log G' per entry (NaN kept)."""
    T = np.empty_like(Z)
    log_slope = np.zeros_like(Z)
    for j, knot in enumerate(knots):
        T[:, j], log_slope[:, j] = _piecewise(Z[:, j], knot[:, 0], knot[:, 1])
    return T, np.where(np.isnan(Z), 0.0, log_slope)


def degaussianize(T, knots):
    """The inverse of :func:`gaussianize`'s map, column by column."""
    Z = np.empty_like(T)
    for j, knot in enumerate(knots):
        Z[:, j] = _piecewise(T[:, j], knot[:, 1], knot[:, 0])[0]
    return Z
