"""Gaussian log-densities, the closed-form KL term and decoder variances.

Every function here works on tensors of any floating dtype and broadcasts over
leading dimensions, so the same code serves training (float32, one draw of z
per row) and scoring (float64, many importance draws per row).
"""

import math
from functools import cached_property, partial

import torch

LOG_2PI = math.log(2.0 * math.pi)
# Latent dimensions up to which linear_mixture_log_prob and
# linear_mixture_posterior_mean solve one q-by-q system per row with missing
# entries (D q^2 + K q^3 a row), batched, rather than one per pattern of
# missing entries (D q^2 + K q^3 a pattern, in a loop): with entries missing
# at random from a few dozen features nearly every row has its own pattern,
# and the loop ran 100-300 times slower. Wider latent spaces stay with the
# patterns here, where a row's systems would cost more than its pattern's
# share; the estimators send those rows through data space instead
# (skvae._inference._by_completeness), where a pattern costs K q^3.
ROW_SYSTEMS_MAX_COMPONENTS = 64
# Largest max(diag(Sigma)) * max(diag(P)), P = Sigma^-1 (a lower bound on the
# condition number of Sigma), for which rows with missing entries are scored
# through the precision matrix, whose error grows with the condition. In
# random factor models of 2 to 80 features, noise variances 1e-16 to 1e-2 of
# standardized features, the rows this bound lets through erred by at most
# 1e-7 relative (their own factors: 3e-10); without it, by up to 1e-2. The
# detector's and the imputer's floor of the decoder variance (1e-4) is far
# inside it; GaussianVAE's (1e-8) is near it, so a model whose variances
# reach that floor scores each pattern with its own factor (slower, as exact).
MAX_PRECISION_CONDITION = 1e8


def gaussian_log_prob(x, mean, var, mask=None):
    r"""Log-density of a diagonal Gaussian, summed over the last dimension.

    .. math::

        \log \mathcal N(x \mid \mu, \operatorname{diag}\sigma^2)
        = -\tfrac12 \sum_d \Big[\log 2\pi + \log\sigma_d^2
          + \frac{(x_d - \mu_d)^2}{\sigma_d^2}\Big]

    Parameters
    ----------
    x, mean, var : Tensor
        Broadcastable tensors; ``var`` must be positive.
    mask : Tensor of bool, default=None
        Where given, only the entries where ``mask`` is true enter the sum:
        the exact log-density of the observed part of ``x``, since the
        covariance is diagonal.

    Returns
    -------
    Tensor
        The log-density, with the last dimension summed out.
    """
    return gaussian_log_prob_of_squares((x - mean) ** 2, var, mask)


def gaussian_log_prob_of_squares(squared, var, mask=None):
    """:func:`gaussian_log_prob` from the squared residuals ``(x - mean) ** 2``.

    For callers that need the squared residuals themselves too (training
    computes the closed-form variance from them).
    """
    terms = LOG_2PI + torch.log(var) + squared / var
    if mask is not None:
        terms = torch.where(mask, terms, 0.0)
    return -0.5 * terms.sum(-1)


class GaussianFactors:
    """The factors of a whole covariance, computed once for many chunks of rows.

    ``cholesky`` is the lower Cholesky factor of the covariance; the
    precision matrix is computed from it when first needed.
    """

    def __init__(self, covariance):
        self.cholesky = torch.linalg.cholesky(covariance)
        self.log_det = 2.0 * torch.log(torch.diagonal(self.cholesky)).sum()

    @cached_property
    def precision(self):
        """``covariance^-1``, or None where it is too ill-conditioned to use."""
        precision = torch.cholesky_inverse(self.cholesky)
        variance = (self.cholesky**2).sum(1)  # diag(covariance)
        condition = variance.max() * torch.diagonal(precision).max()
        return precision if condition <= MAX_PRECISION_CONDITION else None


def full_gaussian_log_prob(x, mean, covariance, mask=None, factors=None):
    r"""Log-density of a Gaussian with a full covariance matrix, per row.

    :math:`\log \mathcal N(x_o \mid \mu_o, \Sigma_{oo})` for each row of
    ``x`` (n_samples, n_features): with ``mask``, of its observed entries
    ``o`` only (the missing ones marginalised exactly); a row with none gets
    0. ``factors``, the whole ``covariance``'s :class:`GaussianFactors` where
    the caller keeps them (their cost, ``D^3``, is the same for every chunk
    of rows), serve the complete rows, and the rows with at most half of
    their entries missing through the precision matrix
    :math:`P = \Sigma^{-1}`: with ``m`` the missing entries,

    .. math::

        r_o^\top \Sigma_{oo}^{-1} r_o = r^\top P r
        - (P r)_m^\top P_{mm}^{-1} (P r)_m, \qquad
        \log|\Sigma_{oo}| = \log|\Sigma| + \log|P_{mm}|,

    for any residual ``r`` on the missing entries (zero here), which costs
    ``m^3`` per row instead of ``(D - m)^3``. Other rows, and all of them
    where the covariance is too ill-conditioned (``MAX_PRECISION_CONDITION``),
    get a Cholesky factor of their own, :math:`\Sigma_{oo}`'s. The rows
    that miss as many entries are solved in one batched call
    (:func:`_count_groups`), whatever their patterns: with entries missing
    at random nearly every row has its own, and a loop over patterns ran
    20-50 times slower. Rows of a pattern many rows share
    (:func:`_shared_patterns`) go a pattern at a time instead.
    """
    out = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    n_features = x.shape[1]
    complete = slice(None) if mask is None else mask.all(1)
    factor = factors.cholesky if factors is not None else None
    if factor is None and (mask is None or complete.any()):
        factor = torch.linalg.cholesky(covariance)
    if mask is None or complete.any():
        white = torch.linalg.solve_triangular(
            factor, (x[complete] - mean).T, upper=False
        )
        out[complete] = (
            -0.5 * (n_features * LOG_2PI + (white**2).sum(0))
            - torch.log(torch.diagonal(factor)).sum()
        )
    if mask is None:
        return out
    shared = _shared_patterns(mask)
    if shared.any():
        out[shared] = _log_prob_by_pattern(
            x[shared], mean, covariance, mask[shared], factors
        )
    for group in _count_groups(mask | shared.unsqueeze(1)):
        m, o = group[1].shape[1], group[2].shape[1]
        own = group
        if factors is not None and m <= o and factors.precision is not None:
            failed = []
            for part in _batches(group[0].numel(), m * m + 2 * n_features):
                rows, missing = group[0][part], group[1][part]
                through = _log_prob_through_precision(
                    out, x, mean, mask, factors, rows, missing, o
                )
                failed.append(~through)
            failed = torch.cat(failed)
            if not failed.any():
                continue
            own = tuple(g[failed] for g in group)
        for part in _batches(own[0].numel(), o * o + n_features):
            rows, observed = own[0][part], own[2][part]
            (factor,) = _per_pattern(
                observed,
                lambda obs: (
                    torch.linalg.cholesky(
                        covariance[obs.unsqueeze(2), obs.unsqueeze(1)]
                    ),
                ),
            )
            residual = (x[rows] - mean).gather(1, observed)
            white = torch.linalg.solve_triangular(
                factor, residual.unsqueeze(2), upper=False
            ).squeeze(2)
            out[rows] = -0.5 * (o * LOG_2PI + (white**2).sum(1)) - torch.log(
                torch.diagonal(factor, dim1=1, dim2=2)
            ).sum(1)
    return out


def _log_prob_through_precision(out, x, mean, mask, factors, rows, missing, o):
    """:func:`full_gaussian_log_prob` of ``rows`` through P, into ``out``.

    Returns which rows it could score: those whose block :math:`P_{mm}` did
    not round to indefinite.
    """
    precision = factors.precision
    residual = torch.where(mask[rows], x[rows] - mean, 0.0)
    projected = residual @ precision
    inner, info = _per_pattern(
        missing,
        lambda miss: torch.linalg.cholesky_ex(
            precision[miss.unsqueeze(2), miss.unsqueeze(1)]
        ),
    )
    correction = torch.linalg.solve_triangular(
        inner, projected.gather(1, missing).unsqueeze(2), upper=False
    ).squeeze(2)
    log_inner = torch.log(torch.diagonal(inner, dim1=1, dim2=2)).sum(1)
    through = info == 0
    out[rows[through]] = (
        -0.5
        * (
            o * LOG_2PI
            + (projected * residual).sum(1)
            - (correction**2).sum(1)
            + factors.log_det
            + 2.0 * log_inner
        )[through]
    )
    return through


def gaussian_conditional_mean(x, mean, covariance, mask, factors, noise=None):
    r"""E[x | x_o] of a Gaussian with a full covariance matrix, per row, or a draw.

    :math:`\mu_m + \Sigma_{mo} \Sigma_{oo}^{-1} (x_o - \mu_o)` on the
    missing entries ``m`` of each row of ``x`` (n_samples, n_features), the
    observed ones as they are; a row with none gets ``mean``. ``factors`` are
    the whole ``covariance``'s :class:`GaussianFactors`: as in
    :func:`full_gaussian_log_prob`, the rows with at most half of their
    entries missing go through the precision matrix :math:`P`, for which
    the same mean is :math:`\mu_m - P_{mm}^{-1} (P r)_m` with ``r`` the
    residual, zero on the missing entries (``m^3`` per row instead of
    ``(D - m)^3``); the others, and all of them where the covariance is too
    ill-conditioned, through :math:`\Sigma_{oo}`; the rows that miss as
    many entries in one batched call (:func:`_count_groups`), but for the
    rows of a pattern many rows share (:func:`_shared_patterns`), which go a
    pattern at a time.

    With ``noise`` (standard normal, of x's shape), the missing entries are
    instead a draw from p(x_m | x_o): the mean plus :math:`S\, e_m`, where
    :math:`S S^\top` is the conditional covariance, :math:`P_{mm}^{-1}`
    (:math:`S = C^{-\top}` for the Cholesky factor :math:`C` of
    :math:`P_{mm}`) or :math:`\Sigma_{mm} - \Sigma_{mo} \Sigma_{oo}^{-1}
    \Sigma_{om}` (its symmetric square root, rounding's negative
    eigenvalues set to 0).

    Returns
    -------
    Tensor of shape (n_samples, n_features)
    """
    if mask is None:
        return x.clone()
    out = torch.where(mask, x, mean)  # complete rows, and rows with none, done
    residual = torch.where(mask, x - mean, 0.0)
    nothing = ~mask.any(1)
    if noise is not None and nothing.any():
        # Rows with nothing observed: draws from the whole Gaussian.
        out[nothing] = mean + noise[nothing] @ _square_root(covariance).T
    shared = _shared_patterns(mask)
    if shared.any():
        out[shared] = _conditional_mean_by_pattern(
            x[shared],
            mean,
            covariance,
            mask[shared],
            factors,
            None if noise is None else noise[shared],
        )
    n_features = x.shape[1]
    for group in _count_groups(mask | shared.unsqueeze(1)):
        m, o = group[1].shape[1], group[2].shape[1]
        own = group
        if m <= o and factors.precision is not None:
            failed = []
            for part in _batches(group[0].numel(), m * m + m * n_features):
                rows, missing = group[0][part], group[1][part]
                precision = factors.precision
                inner, info = _per_pattern(
                    missing,
                    lambda miss, precision=precision: torch.linalg.cholesky_ex(
                        precision[miss.unsqueeze(2), miss.unsqueeze(1)]
                    ),
                )
                # (P r)_m, from the rows of P for each row's missing entries.
                projected = precision[missing] @ residual[rows].unsqueeze(2)
                solved = torch.cholesky_solve(projected, inner).squeeze(2)
                filled = mean[missing] - solved
                if noise is not None:  # C^-T e: a draw of covariance P_mm^-1
                    filled = filled + torch.linalg.solve_triangular(
                        inner.transpose(1, 2),
                        noise[rows].gather(1, missing).unsqueeze(2),
                        upper=True,
                    ).squeeze(2)
                through = info == 0  # else P_mm rounded to indefinite
                out[rows[through].unsqueeze(1), missing[through]] = filled[through]
                failed.append(~through)
            failed = torch.cat(failed)
            if not failed.any():
                continue
            own = tuple(g[failed] for g in group)
        for part in _batches(own[0].numel(), o * o + m * o + m * m):
            rows, missing, observed = (g[part] for g in own)
            gain, root = _per_pattern(
                torch.cat([missing, observed], 1),
                partial(_conditional_factors, covariance, m=m, draws=noise is not None),
            )
            residual_o = residual[rows].gather(1, observed).unsqueeze(2)
            filled = mean[missing] + (gain @ residual_o).squeeze(2)
            if noise is not None:
                filled = filled + (
                    root @ noise[rows].gather(1, missing).unsqueeze(2)
                ).squeeze(2)
            out[rows.unsqueeze(1), missing] = filled
    return out


def _conditional_factors(covariance, both, m, draws):
    r"""Per pattern (rows of ``both``: m missing, then observed indices): the gain
    :math:`\Sigma_{mo} \Sigma_{oo}^{-1}` and, with ``draws``, the square
    root of the conditional covariance (else an empty tensor)."""
    missing, observed = both[:, :m], both[:, m:]
    factor = torch.linalg.cholesky(
        covariance[observed.unsqueeze(2), observed.unsqueeze(1)]
    )
    cross = covariance[missing.unsqueeze(2), observed.unsqueeze(1)]  # S_mo
    gain = torch.cholesky_solve(cross.transpose(1, 2), factor).transpose(1, 2)
    if not draws:
        return gain, gain.new_empty(gain.shape[0], 0)
    conditional = covariance[missing.unsqueeze(2), missing.unsqueeze(1)] - gain @ (
        cross.transpose(1, 2)
    )
    return gain, _square_root(conditional)


def _square_root(covariance):
    """A symmetric square root of covariance matrices (..., n, n).

    Through the eigenvectors, rounding's negative eigenvalues set to 0: a
    conditional covariance computed as a difference may be a little
    indefinite.
    """
    values, vectors = torch.linalg.eigh(covariance)
    return (vectors * values.clamp(min=0.0).sqrt().unsqueeze(-2)) @ vectors.transpose(
        -1, -2
    )


# At most about this many values in one batch of rows of _count_groups.
_GROUP_ELEMENTS = 2**22


def _count_groups(mask):
    r"""The rows of ``mask`` grouped by how many entries they miss.

    Yields ``(rows, missing, observed)`` for each number ``m`` of missing
    entries (neither none nor all): the rows' indices (n,), and the indices
    of each row's missing (n, m) and observed (n, D - m) features, each in
    feature order. Rows with as many missing entries share the shapes of
    their blocks (:math:`P_{mm}` or :math:`\Sigma_{oo}`), so a batch of them
    (:func:`_batches`) is solved in one call however many patterns it holds.
    """
    n_features = mask.shape[1]
    counts = n_features - mask.sum(1)
    for m in torch.unique(counts.cpu()).tolist():
        if 0 < m < n_features:
            rows = torch.nonzero(counts == m).squeeze(1)
            # Missing (False, 0) first, each part in feature order.
            order = torch.argsort(mask[rows].to(torch.uint8), dim=1, stable=True)
            yield rows, order[:, :m], order[:, m:]


def _batches(n_rows, per_row):
    """Slices of ``range(n_rows)`` holding about ``_GROUP_ELEMENTS`` values each."""
    step = max(1, _GROUP_ELEMENTS // max(per_row, 1))
    return [slice(start, start + step) for start in range(0, n_rows, step)]


def _per_pattern(indices, factorize):
    """``factorize`` of each distinct row of ``indices``, one result per row.

    Rows of a batch that share a pattern of missing entries share their
    blocks: each distinct pattern is factorized once (an ``m^3`` or ``o^3``
    Cholesky), and the results are indexed back to the rows, so a column
    missing from many rows costs one factorization, not one per row.
    ``factorize`` maps the distinct rows of ``indices`` (u, k) to a tuple of
    tensors whose first dimension is u.
    """
    # On the CPU: torch.unique with dim has no kernel on every device (MPS).
    distinct, inverse = torch.unique(indices.cpu(), dim=0, return_inverse=True)
    inverse = inverse.to(indices.device)
    return tuple(t[inverse] for t in factorize(distinct.to(indices.device)))


def _log_prob_by_pattern(x, mean, covariance, mask, factors):
    """:func:`full_gaussian_log_prob`, one pattern of missing entries at a time.

    For rows whose pattern many rows share (:func:`_shared_patterns`): one
    factor per pattern and a solve with all its rows as right-hand sides,
    which batched per-row solves cannot match.
    """
    out = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    n_features = x.shape[1]
    precision = None
    if factors is not None and mask is not None:
        # The rows that may go through the precision, and only those, are
        # projected: (P r), and r' P r.
        row_missing = n_features - mask.sum(1)
        through = (row_missing > 0) & (2 * row_missing <= n_features)
        if through.any():
            precision = factors.precision
    if precision is not None:
        residual = torch.where(mask[through], x[through] - mean, 0.0)
        projected = residual @ precision
        quadratic = (projected * residual).sum(1)
        position = torch.cumsum(through, 0) - 1  # a row's place among them
    for rows, observed in _observed_patterns(x, mask):
        n_missing = n_features - observed.numel()
        if precision is not None and 0 < 2 * n_missing <= n_features:
            missing = torch.ones(n_features, dtype=torch.bool, device=x.device)
            missing[observed] = False
            inner, info = torch.linalg.cholesky_ex(precision[missing][:, missing])
            if info.item() == 0:  # else P rounded to indefinite: Sigma_oo's own
                at = position[rows]
                correction = torch.linalg.solve_triangular(
                    inner, projected[at][:, missing].T, upper=False
                )
                out[rows] = -0.5 * (
                    observed.numel() * LOG_2PI
                    + quadratic[at]
                    - (correction**2).sum(0)
                    + factors.log_det
                    + 2.0 * torch.log(torch.diagonal(inner)).sum()
                )
                continue
        if factors is not None and n_missing == 0:
            factor = factors.cholesky
        else:
            factor = torch.linalg.cholesky(covariance[observed][:, observed])
        residual_o = (x[rows][:, observed] - mean[observed]).T
        white = torch.linalg.solve_triangular(factor, residual_o, upper=False)
        out[rows] = (
            -0.5 * (observed.numel() * LOG_2PI + (white**2).sum(0))
            - torch.log(torch.diagonal(factor)).sum()
        )
    return out


def _conditional_mean_by_pattern(x, mean, covariance, mask, factors, noise=None):
    """:func:`gaussian_conditional_mean`, one pattern of missing entries at a time.

    For rows whose pattern many rows share (:func:`_shared_patterns`), as
    :func:`_log_prob_by_pattern`.
    """
    if mask is None:
        return x.clone()
    n_features = x.shape[1]
    out = torch.where(mask, x, mean)  # complete rows, and rows with none, done
    residual = torch.where(mask, x - mean, 0.0)
    precision = factors.precision
    patterns = list(_observed_patterns(x, mask))
    if noise is not None and not mask.any(1).all():
        # Rows with nothing observed: draws from the whole Gaussian.
        nothing = ~mask.any(1)
        patterns.append((nothing, torch.zeros(0, dtype=torch.long, device=x.device)))
    for rows, observed in patterns:
        missing = torch.ones(n_features, dtype=torch.bool, device=x.device)
        missing[observed] = False
        n_missing = n_features - observed.numel()
        if n_missing == 0:
            continue
        filled = spread = None
        if precision is not None and 2 * n_missing <= n_features:
            inner, info = torch.linalg.cholesky_ex(precision[missing][:, missing])
            if info.item() == 0:  # else P rounded to indefinite: Sigma_oo's own
                projected = residual[rows] @ precision[:, missing]  # (P r)_m
                filled = mean[missing] - torch.cholesky_solve(projected.T, inner).T
                if noise is not None:  # C^-T e, rows as columns
                    spread = torch.linalg.solve_triangular(
                        inner.T, noise[rows][:, missing].T, upper=True
                    ).T
        if filled is None and not observed.numel():
            filled = mean.expand(int(rows.sum()), -1)
            conditional = covariance
        elif filled is None:
            factor = torch.linalg.cholesky(covariance[observed][:, observed])
            solved = torch.cholesky_solve(residual[rows][:, observed].T, factor)
            cross = covariance[missing][:, observed]
            filled = mean[missing] + (cross @ solved).T
            if noise is not None:
                conditional = covariance[missing][:, missing] - cross @ (
                    torch.cholesky_solve(cross.T, factor)
                )
        if spread is None and noise is not None:
            spread = noise[rows][:, missing] @ _square_root(conditional)
        if spread is not None:
            filled = filled + spread
        block = out[rows]
        block[:, missing] = filled
        out[rows] = block
    return out


# A pattern of missing entries shared by at least this many rows of a chunk
# is solved on its own, its rows as the right-hand sides of one solve (as
# many rows missing the same column are); rarer patterns are batched row by
# row. A solve with many right-hand sides ran about 25 times faster than as
# many one-row solves in a batch (399 observed entries, 500 rows).
SHARED_PATTERN_ROWS = 16


def _shared_patterns(mask):
    """Which rows of ``mask`` miss some entries in a pattern of SHARED_PATTERN_ROWS or more rows."""
    # On the CPU: torch.unique with dim has no kernel on every device (MPS).
    _, inverse, counts = torch.unique(
        mask.cpu(), dim=0, return_inverse=True, return_counts=True
    )
    shared = (counts[inverse] >= SHARED_PATTERN_ROWS).to(mask.device)
    return shared & ~mask.all(1) & mask.any(1)


def _observed_patterns(x, mask):
    """``(rows, observed)`` for each pattern of observed entries in ``mask``.

    ``rows`` selects the rows of ``x`` with that pattern (all rows without a
    mask), ``observed`` holds the indices of its observed features; rows
    with none are left out.
    """
    if mask is None:
        yield slice(None), torch.arange(x.shape[1], device=x.device)
        return
    # On the CPU: torch.unique with dim has no kernel on every device (MPS).
    patterns, inverse = torch.unique(mask.cpu(), dim=0, return_inverse=True)
    inverse = inverse.to(x.device)
    for index, pattern in enumerate(patterns):
        observed = pattern.nonzero().squeeze(1).to(x.device)
        if observed.numel() > 0:
            yield inverse == index, observed


def linear_mixture_factors(weight, variance, cholesky):
    r"""What :func:`linear_mixture_log_prob` needs of one pattern of observed entries.

    For the decoder weight ``A`` (n_observed, q) and variance
    :math:`\Psi` (n_observed,) of the observed features, and the prior's
    Cholesky factors :math:`L_k` (K, q, q): :math:`B = \Psi^{-1} A`,
    :math:`P = A^\top \Psi^{-1} A`, and the Cholesky factors :math:`C_k` of
    :math:`M_k = I + L_k^\top P L_k`, whose eigenvalues are at least 1.
    Returned as a tuple ``(B, P, C)``.
    """
    scaled = weight / variance.unsqueeze(1)
    precision = weight.T @ scaled
    eye = torch.eye(weight.shape[1], dtype=weight.dtype, device=weight.device)
    inner = eye + cholesky.transpose(1, 2) @ precision @ cholesky
    return scaled, precision, torch.linalg.cholesky(inner)


def linear_mixture_log_prob(
    x, weight, bias, variance, log_weights, means, cholesky, mask=None, factors=None
):
    r"""Log-density of a linear-Gaussian model with a Gaussian mixture prior, per row.

    With :math:`z \sim \sum_k \pi_k \mathcal N(m_k, L_k L_k^\top)` and
    :math:`x \mid z \sim \mathcal N(A z + c, \Psi)`, :math:`\Psi` diagonal,
    :math:`x` is itself a Gaussian mixture,

    .. math::

        p(x) = \sum_k \pi_k\,
        \mathcal N\big(x \mid A m_k + c,\; A L_k L_k^\top A^\top + \Psi\big),

    computed exactly in latent space by the matrix inversion and determinant
    lemmas, at a cost of :math:`q^2` per row and component instead of
    :math:`D^2`, as :class:`~sklearn.decomposition.FactorAnalysis` does for
    one component. With ``r = x - c``, :math:`y = A^\top \Psi^{-1} r`,
    :math:`P = A^\top \Psi^{-1} A`, :math:`M_k = I + L_k^\top P L_k` and
    :math:`v_k = L_k^\top (y - P m_k)`,

    .. math::

        \log \mathcal N_k(x) = -\tfrac12 \big(D \log 2\pi + \log|\Psi|
        + \log|M_k| + r^\top \Psi^{-1} r - 2 m_k^\top y + m_k^\top P m_k
        - v_k^\top M_k^{-1} v_k\big).

    Parameters
    ----------
    x : Tensor of shape (n_samples, n_features)
    weight : Tensor of shape (n_features, q)
        ``A``.
    bias : Tensor of shape (n_features,)
        ``c``.
    variance : Tensor of shape (n_features,)
        The diagonal of :math:`\Psi`, positive.
    log_weights : Tensor of shape (K,)
        Normalised log mixture weights.
    means : Tensor of shape (K, q)
    cholesky : Tensor of shape (K, q, q)
        Lower-triangular Cholesky factors of the prior's covariances.
    mask : Tensor of bool, default=None
        Observed entries: only they count (the missing ones marginalised
        exactly: with a q-by-q system per row, batched, where q is at most
        ``ROW_SYSTEMS_MAX_COMPONENTS`` and the row's pattern is rare in the
        chunk, else with factors per pattern of missing entries); a row with
        none gets 0.
    factors : tuple, default=None
        :func:`linear_mixture_factors` for all features, where the caller
        has them (they are the costly part, ``K q^3``, and the same for
        every chunk of complete rows).

    Returns
    -------
    Tensor of shape (n_samples,)
    """
    args = weight, bias, variance, log_weights, means, cholesky
    if mask is None or weight.shape[1] > ROW_SYSTEMS_MAX_COMPONENTS:
        return _linear_mixture_log_prob_by_pattern(x, *args, mask, factors)
    out = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    scattered, shared, complete = _row_routes(mask)
    log_component, _ = _linear_mixture_rows(
        x[scattered],
        weight,
        bias,
        variance,
        means,
        cholesky,
        mask[scattered],
        posterior=False,
    )
    out[scattered] = torch.logsumexp(log_component + log_weights.unsqueeze(1), 0)
    if shared.any():
        out[shared] = _linear_mixture_log_prob_by_pattern(
            x[shared], *args, mask[shared]
        )
    if complete.any():
        out[complete] = _linear_mixture_log_prob_by_pattern(
            x[complete], *args, factors=factors
        )
    return out


def _linear_mixture_log_prob_by_pattern(
    x, weight, bias, variance, log_weights, means, cholesky, mask=None, factors=None
):
    """:func:`linear_mixture_log_prob`, one pattern of missing entries at a time."""
    out = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for rows, log_component, _, _ in _linear_mixture_components(
        x, weight, bias, variance, means, cholesky, mask, factors
    ):
        out[rows] = torch.logsumexp(log_component + log_weights.unsqueeze(1), 0)
    return out


def _row_routes(mask):
    """Rows batched one by one, rows of shared patterns, and complete rows.

    Rows with nothing observed are in none (they keep 0, or the prior's
    mean). Complete rows go as without a mask, so that their results do not
    depend on the rows beside them; rows whose pattern many share
    (:func:`_shared_patterns`) go a pattern at a time.
    """
    shared = _shared_patterns(mask)
    complete = mask.all(1)
    return ~complete & mask.any(1) & ~shared, shared, complete


def linear_mixture_posterior_mean(
    x, weight, bias, variance, log_weights, means, cholesky, mask=None
):
    r"""E[z | x_o] under the model of :func:`linear_mixture_log_prob`, per row.

    The posterior is a mixture too: component :math:`k` has the weight
    :math:`r_k \propto \pi_k \mathcal N_k(x_o)` and the Gaussian posterior
    of mean :math:`m_k + L_k M_k^{-1} L_k^\top (y - P m_k)`, in the notation
    of :func:`linear_mixture_log_prob` (with the observed entries only). The
    conditional mean of the missing entries is then :math:`A_m E[z \mid x_o]
    + c_m`, since their noise is independent of :math:`x_o`. A row with no
    observed entry gets the prior's mean. The parameters are as in
    :func:`linear_mixture_log_prob`. Rows with missing entries are solved
    row by row (:func:`_linear_mixture_rows`) where q is at most
    ``ROW_SYSTEMS_MAX_COMPONENTS``, except those whose pattern many rows
    share (:func:`_shared_patterns`), which go, as all of them for a wider
    latent space, once per pattern of missing entries.

    Returns
    -------
    Tensor of shape (n_samples, q)
    """
    args = weight, bias, variance, log_weights, means, cholesky
    if mask is None or weight.shape[1] > ROW_SYSTEMS_MAX_COMPONENTS:
        return _linear_mixture_posterior_mean_by_pattern(x, *args, mask)
    prior_mean = torch.exp(log_weights) @ means
    out = prior_mean.expand(x.shape[0], -1).clone()
    scattered, shared, complete = _row_routes(mask)
    log_component, posterior = _linear_mixture_rows(
        x[scattered], weight, bias, variance, means, cholesky, mask[scattered]
    )
    responsibilities = torch.softmax(log_component + log_weights.unsqueeze(1), 0)
    out[scattered] = (responsibilities.unsqueeze(2) * posterior).sum(0)
    if shared.any():
        out[shared] = _linear_mixture_posterior_mean_by_pattern(
            x[shared], *args, mask[shared]
        )
    if complete.any():
        out[complete] = _linear_mixture_posterior_mean_by_pattern(x[complete], *args)
    return out


def _linear_mixture_posterior_mean_by_pattern(
    x, weight, bias, variance, log_weights, means, cholesky, mask=None
):
    """:func:`linear_mixture_posterior_mean`, one pattern of missing entries at a time."""
    prior_mean = torch.exp(log_weights) @ means
    out = prior_mean.expand(x.shape[0], -1).clone()
    for rows, log_component, v, inner in _linear_mixture_components(
        x, weight, bias, variance, means, cholesky, mask
    ):
        responsibilities = torch.softmax(log_component + log_weights.unsqueeze(1), 0)
        # M_k^-1 L_k^T u_k = C_k^-T v_k, with v_k = C_k^-1 L_k^T u_k.
        solved = torch.linalg.solve_triangular(
            inner.transpose(1, 2), v, upper=True
        )  # (K, q, n)
        posterior = means.unsqueeze(2) + cholesky @ solved  # (K, q, n)
        out[rows] = (responsibilities.unsqueeze(1) * posterior).sum(0).T
    return out


def _linear_mixture_rows(
    x, weight, bias, variance, means, cholesky, mask, posterior=True
):
    r""":math:`\log \mathcal N_k(x_o)` (K, n) and E[z | x_o, k] (K, n, q), row by row.

    What :func:`_linear_mixture_components` computes in a loop over the
    patterns of observed entries, here batched over the rows:
    :math:`P_i = A^\top \mathrm{diag}(o_i / \psi) A` for the observed
    entries :math:`o_i` of row :math:`i`, and its Cholesky factors, once per
    distinct pattern (:math:`D q^2 + K q^3`), then a :math:`q \times q`
    triangular solve per row and component: with entries missing at random
    from a few dozen features, nearly every row has its own pattern, and the
    loop ran as many small solves as rows. A row with nothing observed gets
    0 and the prior component's mean. With ``posterior=False``, the second
    is None.
    """
    observed = mask.to(x.dtype)
    weights = observed / variance  # Psi^-1 on the observed entries, 0 elsewhere
    residual = torch.where(mask, x - bias, 0.0)
    y = (residual * weights) @ weight  # (n, q)
    base = (
        observed.sum(1) * LOG_2PI
        + observed @ torch.log(variance)
        + (residual**2 * weights).sum(1)
    )
    # P_i depends on the row's pattern only: once per distinct pattern (on
    # the CPU: torch.unique with dim has no kernel on every device).
    distinct, inverse = torch.unique(mask.cpu(), dim=0, return_inverse=True)
    inverse = inverse.to(x.device)
    scaled = weight.T.unsqueeze(0) * (distinct.to(x) / variance).unsqueeze(1)
    precision = scaled @ weight  # (patterns, q, q)
    eye = torch.eye(weight.shape[1], dtype=x.dtype, device=x.device)
    log_components, posteriors = [], []
    for mean, factor in zip(means, cholesky, strict=True):
        inner = torch.linalg.cholesky(eye + factor.T @ precision @ factor)
        log_det = 2.0 * torch.log(torch.diagonal(inner, dim1=1, dim2=2)).sum(1)
        inner, log_det = inner[inverse], log_det[inverse]
        projected = (precision @ mean)[inverse]  # (n, q): P_i m_k
        u = y - projected
        v = torch.linalg.solve_triangular(
            inner, (u @ factor).unsqueeze(2), upper=False
        )  # (n, q, 1): C^-1 L^T u
        log_components.append(
            -0.5
            * (base + log_det - 2.0 * y @ mean + projected @ mean - (v**2).sum((1, 2)))
        )
        if posterior:
            solved = torch.linalg.solve_triangular(inner.transpose(1, 2), v, upper=True)
            posteriors.append(mean + (factor @ solved).squeeze(2))
    return torch.stack(log_components), torch.stack(posteriors) if posterior else None


def _linear_mixture_components(
    x, weight, bias, variance, means, cholesky, mask=None, factors=None
):
    r"""Per pattern of observed entries, what the linear-mixture functions share.

    Yields ``(rows, log_component, v, inner)``: the rows of that pattern,
    :math:`\log \mathcal N_k(x_o)` of shape (K, n), :math:`v_k` of shape
    (K, q, n) and the Cholesky factors :math:`C_k` (K, q, q), in the notation
    of :func:`linear_mixture_log_prob`.
    """
    for rows, observed in _observed_patterns(x, mask):
        if factors is None or observed.numel() < x.shape[1]:
            scaled, precision, inner = linear_mixture_factors(
                weight[observed], variance[observed], cholesky
            )
        else:
            scaled, precision, inner = factors
        residual = x[rows][:, observed] - bias[observed]
        y = residual @ scaled  # (n, q)
        projected = means @ precision  # (K, q): P m_k
        u = y.unsqueeze(0) - projected.unsqueeze(1)  # (K, n, q)
        v = torch.linalg.solve_triangular(
            inner, (u @ cholesky).transpose(1, 2), upper=False
        )  # (K, q, n): C_k^-1 L_k^T u_k
        log_det = 2.0 * torch.log(torch.diagonal(inner, dim1=1, dim2=2)).sum(1)
        base = observed.numel() * LOG_2PI + torch.log(variance[observed]).sum()
        base = base + (residual**2 / variance[observed]).sum(1)  # (n,)
        log_component = -0.5 * (
            base.unsqueeze(0)
            + log_det.unsqueeze(1)
            - 2.0 * means @ y.T
            + (projected * means).sum(1, keepdim=True)
            - (v**2).sum(1)
        )  # (K, n)
        yield rows, log_component, v, inner


def linear_mixture_data_components(weight, bias, variance, means=None, cholesky=None):
    r"""The Gaussian components of p(x) for a linear decoder, in data space.

    In the notation of :func:`linear_mixture_log_prob`, one ``(mean,
    covariance, factors)`` per prior component: :math:`A m_k + c`,
    :math:`(A L_k)(A L_k)^\top + \Psi` and its :class:`GaussianFactors`;
    without ``means`` (the N(0, I) prior), the one Gaussian
    :math:`\mathcal N(c, A A^\top + \Psi)`. They cost ``K D^3`` and hold
    ``3 K D^2`` values: the D-by-D systems that the latent-space functions
    avoid, worth paying once for rows with missing entries where the latent
    space is wide, whose patterns would cost ``K q^3`` each.
    """
    if means is None:
        pairs = [(bias, weight @ weight.T + torch.diag(variance))]
    else:
        pairs = []
        for mean, factor in zip(means, cholesky, strict=True):
            loading = weight @ factor
            pairs.append(
                (weight @ mean + bias, loading @ loading.T + torch.diag(variance))
            )
    return [
        (mean, covariance, GaussianFactors(covariance)) for mean, covariance in pairs
    ]


def gaussian_mixture_log_prob(x, log_weights, components, mask=None):
    r""":math:`\log \sum_k \pi_k \mathcal N(x_o \mid \mu_{k,o}, \Sigma_{k,oo})` per row.

    ``components`` as :func:`linear_mixture_data_components` gives them,
    each scored by :func:`full_gaussian_log_prob`; a row with nothing
    observed gets 0.
    """
    log_component = torch.stack(
        [
            full_gaussian_log_prob(x, mean, covariance, mask, factors)
            for mean, covariance, factors in components
        ]
    )
    out = torch.logsumexp(log_component + log_weights.unsqueeze(1), 0)
    if mask is not None:
        out[~mask.any(1)] = 0.0  # not the rounding of log sum pi_k
    return out


def linear_mixture_posterior_mean_in_data_space(
    x, weight, log_weights, means, cholesky, components, mask=None
):
    r""":func:`linear_mixture_posterior_mean` through p(x)'s components in data space.

    Component :math:`k`'s posterior mean is :math:`m_k + L_k L_k^\top
    A^\top \Sigma_k^{-1} r_k`, where :math:`r_k` is the residual from
    :math:`A m_k + c` with its missing entries at their conditional means
    under the component (:func:`gaussian_conditional_mean`):
    :math:`\Sigma_k^{-1} r_k` is then :math:`\Sigma_{k,oo}^{-1} r_o` on
    the observed entries and 0 on the others. The components are weighted
    by their responsibilities, :math:`\pi_k \mathcal N_k(x_o)` normalised.
    This costs what ``K`` conditional means and log-densities cost, where the
    latent-space formula costs ``K q^3`` per pattern of missing entries. A
    row with no observed entry gets the prior's mean. ``components`` are
    :func:`linear_mixture_data_components` of the same model.

    Returns
    -------
    Tensor of shape (n_samples, q)
    """
    log_component, posterior = [], []
    for mean, factor, (centre, covariance, factors) in zip(
        means, cholesky, components, strict=True
    ):
        filled = gaussian_conditional_mean(x, centre, covariance, mask, factors)
        solved = torch.cholesky_solve((filled - centre).T, factors.cholesky)
        posterior.append(mean + (factor @ (factor.T @ (weight.T @ solved))).T)
        if len(components) > 1:
            log_component.append(
                full_gaussian_log_prob(x, centre, covariance, mask, factors)
            )
    if len(components) == 1:
        return posterior[0]
    responsibilities = torch.softmax(
        torch.stack(log_component) + log_weights.unsqueeze(1), 0
    )
    return (responsibilities.unsqueeze(2) * torch.stack(posterior)).sum(0)


def standard_normal_log_prob(z):
    """Log-density of ``N(0, I)`` summed over the last dimension."""
    return -0.5 * (LOG_2PI + z**2).sum(-1)


def kl_to_standard_normal(mean, std):
    r"""KL divergence from ``N(mean, diag std^2)`` to ``N(0, I)``, per dimension.

    .. math::

        \mathrm{KL}\big(\mathcal N(m, s^2)\,\|\,\mathcal N(0, 1)\big)
        = \tfrac12\,(m^2 + s^2 - \log s^2 - 1)

    It lives in latent space, so it is valid whatever the range of the data.
    Not summed, so that the KL of each latent dimension can be reported (a
    dimension with KL near zero has collapsed to the prior).
    """
    return 0.5 * (mean**2 + std**2 - 2.0 * torch.log(std) - 1.0)


def optimal_variance(squared_residuals, shared, min_variance, mask=None):
    r"""Closed-form decoder variance that maximises the Gaussian likelihood.

    Given residuals :math:`r = x - \mu(z)`, the log-likelihood is maximised by
    :math:`\sigma^2_d = \overline{r_d^2}` (one per feature) or by the mean over
    all features (``shared``). This is the "optimal sigma" of Rybkin et al.
    (2021): it calibrates the decoder at every step, where a log-variance
    stepped by Adam lags far behind when the true noise is small. Because it is
    the optimum, its gradient with respect to the decoder mean vanishes
    (envelope theorem), so the result is returned detached.

    Parameters
    ----------
    squared_residuals : Tensor of shape (n_samples, n_features)
    shared : bool
        One variance for all features (probabilistic PCA) rather than one per
        feature (factor analysis).
    min_variance : float
        Floor: an unbounded Gaussian likelihood diverges as a variance goes to 0.
    mask : Tensor of bool, default=None
        Observed entries; only those enter the mean.

    Returns
    -------
    Tensor of shape (n_features,)
    """
    squared_residuals = squared_residuals.detach()
    if mask is None:  # the fewest operations: this runs at every training step
        variance = squared_residuals.mean(0)
        if shared:
            variance = variance.mean().expand_as(variance)
        return variance.clamp(min=min_variance)
    total = torch.where(mask, squared_residuals, 0.0).sum(0)
    count = mask.sum(0).to(total.dtype)
    if shared:
        total = total.sum().expand_as(total)
        count = count.sum().expand_as(count)
    return (total / count.clamp(min=1.0)).clamp(min=min_variance)


def log_mean_exp(log_weights, dim):
    """``log(mean(exp(log_weights)))`` along ``dim``, without overflow."""
    return torch.logsumexp(log_weights, dim) - math.log(log_weights.shape[dim])


def mixture_log_prob(z, log_weights, means, cholesky, log_det=None):
    r"""Log-density of a mixture of full-covariance Gaussians, at each row of z.

    .. math::

        \log \sum_k \pi_k\, \mathcal N(z \mid \mu_k, L_k L_k^\top),
        \qquad
        \log \mathcal N(z \mid \mu_k, L_k L_k^\top)
        = -\tfrac12 \big(q \log 2\pi + \|L_k^{-1}(z - \mu_k)\|^2\big)
          - \sum_j \log (L_k)_{jj}

    Parameters
    ----------
    z : Tensor of shape (..., q)
    log_weights : Tensor of shape (K,)
        Normalised log mixture weights, ``log pi_k``.
    means : Tensor of shape (K, q)
    cholesky : Tensor of shape (K, q, q)
        Lower-triangular Cholesky factors of the covariances, positive
        diagonal.
    log_det : Tensor of shape (K,), default=None
        ``sum_j log (L_k)_jj``, where the caller has it at hand (the module
        stores the log of the diagonal): two operations fewer per training
        step. Computed from ``cholesky`` when None.

    Returns
    -------
    Tensor of shape z.shape[:-1]
    """
    q = means.shape[1]
    flat = z.reshape(-1, q)
    diff = (flat.unsqueeze(0) - means.unsqueeze(1)).transpose(1, 2)  # (K, q, N)
    white = torch.linalg.solve_triangular(cholesky, diff, upper=False)
    if log_det is None:
        log_det = torch.log(torch.diagonal(cholesky, dim1=1, dim2=2)).sum(1)
    log_component = -0.5 * ((white**2).sum(1) + q * LOG_2PI) - log_det.unsqueeze(1)
    log_joint = log_component + log_weights.unsqueeze(1)
    return torch.logsumexp(log_joint, 0).reshape(z.shape[:-1])


def kl_between_normals(mean, std, prior_mean, prior_var):
    r"""KL divergence from ``N(mean, std^2)`` to ``N(prior_mean, prior_var)``, per dimension.

    .. math::

        \mathrm{KL} = \tfrac12\Big(\frac{s^2 + (m - m_0)^2}{v_0}
        - 1 - \log\frac{s^2}{v_0}\Big)

    :func:`kl_to_standard_normal` is the case ``m_0 = 0, v_0 = 1``.
    """
    ratio = std**2 / prior_var
    return 0.5 * (ratio + (mean - prior_mean) ** 2 / prior_var - 1.0 - torch.log(ratio))
