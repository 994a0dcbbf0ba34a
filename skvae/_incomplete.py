"""The maximum-likelihood Gaussian of incomplete rows, by EM, on numpy arrays.

The closed-form start (:mod:`._linear_start`) is computed from the mean and
the covariance of the data. Where rows have missing entries, those of the
rows with each missing entry filled with its feature's mean are biased: every
variance and covariance shrinks by about the fraction missing, so the start
begins far from the model that training then has to find (and the closed-form
fit of a Gaussian has no training to find it). Under missingness at random,
the maximum-likelihood Gaussian of the observed entries alone is found by EM
(Dempster, Laird and Rubin 1977; Little and Rubin 2019, "Statistical Analysis
with Missing Data", 3rd ed., section 11.2): the E-step fills each row's
missing entries with their conditional mean given its observed ones and adds
up their conditional covariances; the M-step takes the mean of the filled
rows and their covariance plus those conditional covariances. The start's
rows are then completed with draws from those conditionals
(:func:`filled_rows`).
"""

import numpy as np

# EM stops once the mean log-likelihood of the observed entries per row rises
# by less than this (nats), or after EM_MAX_ITER iterations: the imputations
# settle well before the likelihood does, which goes on rising slowly along
# nearly degenerate directions (one-hot features, say).
EM_TOL = 1e-3
EM_MAX_ITER = 30
# EM iterates on at most this many rows (a random subset), then fills all.
EM_ROWS = 2000
# About this many floating-point operations in all (em_iterations): fewer
# iterations where one costs more (one for 10,000 rows of 300 features with
# 30 % missing), and none (None returned) where not even one fits (2,000
# rows of 1,555 features with 10 % missing).
EM_BUDGET = 1e10
# At most about this many float64 numbers in one batch of conditionals.
_BATCH_ELEMENTS = 2**22


def incomplete_gaussian(
    Z, ridge, random_state=0, max_iter=EM_MAX_ITER, tol=EM_TOL, budget=None, rng=None
):
    r"""EM estimate of the mean and covariance of rows Z with missing entries (NaN).

    Parameters
    ----------
    Z : ndarray of shape (n_samples, n_features)
        Rows, NaN where an entry is missing. A row with nothing observed
        counts for nothing.
    ridge : float
        Added to the diagonal of every covariance, so that it stays
        invertible where features are constant or exactly collinear (as
        ``min_variance`` keeps the model's noise).
    random_state : int
        Seed of the choice of the ``EM_ROWS`` rows EM iterates on, where Z
        has more.
    max_iter, tol : int, float
        EM stops after ``max_iter`` iterations, or once the mean
        log-likelihood per row rises by less than ``tol``.
    budget : float or None
        About how many floating-point operations EM may take, its last
        filling of all rows included: fewer iterations where each costs more.
        None: ``EM_BUDGET``.
    rng : numpy.random.Generator or None
        With a generator, the filled rows returned hold draws from the
        conditional distribution of their missing entries instead of its
        mean (:func:`filled_rows`).

    Returns
    -------
    None where not one iteration fits in ``budget`` (:func:`em_iterations`);
    else a tuple of:

    mean : ndarray of shape (n_features,)
    covariance : ndarray of shape (n_features, n_features)
    filled : ndarray of shape (n_samples, n_features)
        Z with each missing entry replaced by its conditional mean given the
        row's observed entries (or a draw, with ``rng``), under the returned
        Gaussian.
    log_likelihood : list of float
        The mean log-density of the observed entries per row of the rows EM
        iterates on, at the start (the mean and covariance of the rows
        filled with the mean) and after each iteration. EM never lowers it
        (with ``ridge`` 0; a positive one perturbs each step slightly).
    """
    Z = np.asarray(Z, dtype=np.float64)
    n_iter = em_iterations(np.isnan(Z), max_iter, budget)
    if n_iter == 0:
        return None
    counted = ~np.isnan(Z).all(1)
    rows = np.flatnonzero(counted)
    if len(rows) > EM_ROWS:
        subset = np.random.default_rng(random_state)
        rows = np.sort(subset.choice(rows, EM_ROWS, replace=False))
    fitted = Z[rows]
    # A feature none of these rows observe (its values all in other rows)
    # starts, and stays, at mean 0 and variance 1, those of standardized data.
    empty = np.isnan(fitted).all(0)
    mean = np.zeros(Z.shape[1])
    mean[~empty] = np.nanmean(fitted[:, ~empty], 0)
    filled = np.where(np.isnan(fitted), mean, fitted)
    covariance = _covariance(filled, mean, 0.0, ridge)
    covariance[empty, empty] += 1.0
    patterns = _Patterns(np.isnan(fitted))
    log_likelihood = []
    for iteration in range(n_iter + 1):
        filled, spread, row_log_density = patterns.conditionals(
            fitted, mean, covariance
        )
        log_likelihood.append(float(row_log_density.mean()) if len(rows) else 0.0)
        if iteration == n_iter or (
            iteration and log_likelihood[-1] - log_likelihood[-2] < tol
        ):
            break
        mean = filled.mean(0)
        covariance = _covariance(filled, mean, spread, ridge)
    if rng is not None or len(rows) < Z.shape[0]:
        filled = _Patterns(np.isnan(Z)).conditionals(Z, mean, covariance, rng)[0]
    return mean, covariance, filled, log_likelihood


def em_iterations(missing, max_iter=EM_MAX_ITER, budget=None):
    """How many EM iterations :func:`incomplete_gaussian` may run, by its budget.

    For rows whose missing entries are ``missing`` (boolean). The cost is
    counted in floating-point operations of the batched small-matrix work,
    which dominates: ``D^3`` per pass for the factors, and ``min(m, o)^3``
    per row for its conditionals. The last filling of all rows is charged
    first, then as many iterations on (at most) ``EM_ROWS`` rows as the rest
    of ``budget`` (``EM_BUDGET`` if None) pays for, up to ``max_iter``;
    0 where the filling alone would cost more.
    """
    budget = EM_BUDGET if budget is None else budget
    n_features = missing.shape[1]
    counts = missing.sum(1)
    per_row = np.minimum(counts, n_features - counts).astype(np.float64) ** 3
    left = budget - (n_features**3 + per_row.sum())
    counted = counts < n_features
    if left < 0 or not counted.any():
        return 0
    iteration = n_features**3 + per_row[counted].mean() * min(counted.sum(), EM_ROWS)
    return int(min(max_iter, left // iteration))


def filled_rows(Z, ridge, random_state):
    """Z's rows completed for the start, and their mean and covariance (or None).

    :func:`incomplete_gaussian`'s ``(mean, covariance)``, and Z with each
    row's missing entries drawn from their conditional distribution given
    its observed ones under that Gaussian (seeded by ``random_state``), not
    set to their conditional means: rows so completed spread as the data
    do, whereas conditional means lie on the Gaussian's regression surfaces,
    and a mixture prior fitted to their latent codes comes out too narrow.
    Where EM would cost more than its budget, Z with each missing entry at
    0 (the mean of standardized data), and None.
    """
    rng = np.random.default_rng(random_state)
    fitted = incomplete_gaussian(Z, ridge, random_state, rng=rng)
    if fitted is None:
        return np.nan_to_num(Z), None
    mean, covariance, drawn, _ = fitted
    return drawn, (mean, covariance)


def observed_log_density(Z, mean, covariance):
    """Log-density of each row's observed entries (not NaN) under N(mean, covariance).

    The marginal of a Gaussian on a row's observed entries is the Gaussian
    of those entries' mean and covariance; a row with nothing observed gets
    0 (the log of the density of nothing).
    """
    missing = np.isnan(Z)
    return _Patterns(missing).conditionals(Z, mean, covariance)[2]


def observed_mahalanobis(Z, mean, covariance):
    """Each row's squared Mahalanobis distance over its observed entries, its fill.

    Under N(mean, covariance): ``(x_o - mu_o)^T Sigma_oo^-1 (x_o - mu_o)``
    for the observed entries o of each row of Z (NaN where missing; 0 for a
    row with nothing observed), and Z with each missing entry at its
    conditional mean given the row's observed ones. With the missing entries
    so filled, the distance of the whole row under the full covariance is
    the observed entries' (the conditional mean adds nothing to it), which
    is how it is computed.

    Returns
    -------
    distance : ndarray of shape (n_samples,)
    filled : ndarray of shape (n_samples, n_features)
    log_det : float
        ``log det(covariance)``, from the same Cholesky factor.
    """
    filled = _Patterns(np.isnan(Z)).conditionals(Z, mean, covariance)[0]
    cholesky = np.linalg.cholesky(covariance)
    white = np.linalg.solve(cholesky, (filled - mean).T)
    log_det = 2.0 * np.log(np.diagonal(cholesky)).sum()
    return (white**2).sum(0), filled, log_det


def tail_equivalent_distance(distance, n_observed, n_features):
    r"""Squared distances over ``n_features`` with the chi-squared tails of ``distance``.

    Under a Gaussian, a row's squared Mahalanobis distance over its ``k``
    observed entries (as in the editing of incomplete survey data, Little
    and Smith 1987) is :math:`\chi^2_k`-distributed, so rows with different
    numbers of observed entries compare through their tail probabilities,
    not through their distances or densities.
    Both directions go through the Wilson and Hilferty (1931) normal
    approximation, :math:`z = ((d/k)^{1/3} - 1 + 2/(9k)) / \sqrt{2/(9k)}`,
    which is monotone, needs no tail probability (those of far outliers
    underflow float64), and maps a distance over all features to itself.
    A row with nothing observed gets the median distance (z = 0).
    """
    k = np.asarray(n_observed, dtype=np.float64)
    spread = np.sqrt(2.0 / (9.0 * np.maximum(k, 1.0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (np.cbrt(distance / k) - 1.0 + spread**2) / spread
    z = np.where(k > 0, z, 0.0)
    full = np.sqrt(2.0 / (9.0 * n_features))
    equivalent = n_features * np.maximum(1.0 - full**2 + z * full, 0.0) ** 3
    # A complete row's own distance, without the round trip's rounding.
    return np.where(k == n_features, distance, equivalent)


def _covariance(filled, mean, spread, ridge):
    """(Sum of outer products of ``filled - mean`` + ``spread``) / n, plus ``ridge`` I."""
    centred = filled - mean
    covariance = (centred.T @ centred + spread) / max(len(filled), 1)
    covariance[np.diag_indices_from(covariance)] += ridge
    return covariance


class _Patterns:
    """Rows grouped by how many entries they miss, with the indices of those entries.

    Within a group, each row's missing entries come first in its own order
    of the features, so that the conditionals of all its rows are computed
    in one batch, through the precision matrix (``m^3`` per row, for ``m``
    missing) or through the observed block of the covariance (``o^3``, for
    ``o`` observed), whichever is smaller.
    """

    def __init__(self, missing):
        self.n_samples, self.n_features = missing.shape
        counts = missing.sum(1)
        self.groups = []
        for m in np.unique(counts):
            if m == 0:
                continue
            rows = np.flatnonzero(counts == m)
            # Missing entries first, each part in feature order.
            order = np.argsort(~missing[rows], axis=1, kind="stable")
            step = max(1, _BATCH_ELEMENTS // (m * self.n_features))
            for start in range(0, len(rows), step):
                part = slice(start, start + step)
                self.groups.append((rows[part], order[part, :m], order[part, m:]))

    def conditionals(self, Z, mean, covariance, rng=None):
        """Filled rows, the sum of conditional covariances, and row log-densities.

        Under N(mean, covariance): each row with its missing entries replaced
        by their conditional mean (with a generator ``rng``, by a draw from
        their conditional distribution; a row with nothing observed, from
        the Gaussian), the sum over rows of the conditional covariances of
        the missing entries (as a features-by-features matrix), and the
        log-density of each row's observed entries.
        """
        n_features = self.n_features
        cholesky = np.linalg.cholesky(covariance)
        log_det = 2 * np.log(np.diagonal(cholesky)).sum()
        identity = np.eye(n_features)
        precision = np.linalg.solve(cholesky.T, np.linalg.solve(cholesky, identity))
        filled = np.where(np.isnan(Z), mean, Z)
        # The residuals with missing entries 0: for a row's missing entries m,
        # (P r)_m = P_mo (x_o - mu_o), for all rows in one product.
        pulled = (filled - mean) @ precision
        spread = np.zeros(n_features * n_features)
        # log det of each row's observed block, Sigma_oo.
        log_det_observed = np.full(self.n_samples, log_det)
        n_observed = np.full(self.n_samples, n_features)
        for rows, miss, obs in self.groups:
            m, o = miss.shape[1], obs.shape[1]
            n_observed[rows] = o
            if o == 0:
                # Nothing observed: the row stays at the mean and counts
                # for nothing (no log-density, no spread).
                log_det_observed[rows] = 0.0
                if rng is not None:
                    noise = rng.standard_normal((len(rows), n_features))
                    filled[rows] = mean + noise @ cholesky.T
                continue
            mm = (miss[:, :, None], miss[:, None, :])
            if m <= o:
                # Through the precision: Sigma_m|o = (P_mm)^-1, and
                # E[x_m | x_o] = mu_m - (P_mm)^-1 P_mo (x_o - mu_o).
                conditional = np.linalg.inv(precision[mm])
                shift = np.take_along_axis(pulled[rows], miss, 1)
                conditional_mean = mean[miss] - (conditional @ shift[..., None])[..., 0]
                # det Sigma = det Sigma_oo det Sigma_m|o.
                log_det_observed[rows] -= np.linalg.slogdet(conditional)[1]
            else:
                # Through the observed block: Sigma_m|o = Sigma_mm -
                # Sigma_mo Sigma_oo^-1 Sigma_om, E[x_m | x_o] = mu_m +
                # Sigma_mo Sigma_oo^-1 (x_o - mu_o).
                residual = np.take_along_axis(filled[rows], obs, 1) - mean[obs]
                observed = np.linalg.cholesky(
                    covariance[obs[:, :, None], obs[:, None, :]]
                )
                cross = covariance[obs[:, :, None], miss[:, None, :]]  # Sigma_om
                white_cross = np.linalg.solve(observed, cross)
                white_residual = np.linalg.solve(observed, residual[..., None])
                conditional_mean = (
                    mean[miss]
                    + (np.swapaxes(white_cross, 1, 2) @ white_residual)[..., 0]
                )
                conditional = (
                    covariance[mm] - np.swapaxes(white_cross, 1, 2) @ white_cross
                )
                log_det_observed[rows] = 2 * np.log(
                    np.diagonal(observed, axis1=1, axis2=2)
                ).sum(1)
            if rng is not None:
                # Through the eigenvectors: rounding may leave the
                # conditional covariance a little indefinite.
                values, vectors = np.linalg.eigh(conditional)
                noise = rng.standard_normal((len(rows), m))
                conditional_mean = conditional_mean + np.einsum(
                    "rij,rj->ri",
                    vectors * np.sqrt(np.maximum(values, 0))[:, None, :],
                    noise,
                )
            block = filled[rows]
            np.put_along_axis(block, miss, conditional_mean, 1)
            filled[rows] = block
            flat = (mm[0] * n_features + mm[1]).ravel()
            spread += np.bincount(
                flat, conditional.ravel(), minlength=n_features * n_features
            )
        # With the missing entries at their conditional means, the Mahalanobis
        # distance of the whole row equals that of its observed entries.
        centred = filled - mean
        quadratic = ((centred @ precision) * centred).sum(1)
        log_density = -0.5 * (
            quadratic + log_det_observed + n_observed * np.log(2 * np.pi)
        )
        return filled, spread.reshape(n_features, n_features), log_density
