"""Where training starts: the closed-form linear-Gaussian fit, on numpy arrays.

A VAE whose decoder mean is ``W z + b`` and whose prior is N(0, I) is
probabilistic PCA (Tipping and Bishop 1999), whose maximum-likelihood ``W``,
noise and exact posterior are known in closed form, or, with a variance per
feature, factor analysis, found by a short iteration. Starting the network
there, with its hidden layers' contributions at zero, makes training add to
what a Gaussian achieves instead of starting from noise. Where the latent
codes of that fit are clustered, a mixture prior fitted to them (a Gaussian
mixture chosen by BIC) starts the model at a mixture of Gaussians instead;
where BIC cannot look far enough, held-out rows may choose a larger one
(:func:`larger_prior`). A start that training does not beat is refitted with
the average of several such mixtures, each from its own random start of EM
(:func:`averaged_mixture`).
"""

import functools
import os
import threading
from dataclasses import dataclass, field, replace

import numpy as np
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from ._incomplete import observed_log_density
from ._mixture import fit_gaussian_mixture, fit_mixtures
from ._model import STD_FLOOR
from ._training import SIGNIFICANCE

# Rows used to compute the start on large data (a random subset).
START_ROWS = 10_000
# Components tried for the mixture prior, 1 to this many, by BIC; the search
# stops once BIC has risen this many times in a row.
BIC_PATIENCE = 3
MAX_PRIOR_COMPONENTS = 16
# Past the BIC search, held-out rows may choose larger mixtures, tried at
# this many times as many components each, up to this many (larger_prior).
HELD_OUT_GROWTH = 1.5
MAX_HELD_OUT_COMPONENTS = 64
# Fewer held-out rows than this cannot tell close mixtures apart: those
# larger than BIC's choice and within a standard error of the best are then
# compared by CV_FOLDS-fold cross-validation on all the rows (larger_prior).
CV_MAX_HELD_OUT_ROWS = 500
CV_FOLDS = 5
# A kept start's mixture prior is the equal-weight average of this many
# mixtures of the chosen structure (and of the larger ones larger_prior
# returns, in turn), each fitted by EM from its own random initialization
# (averaged_mixture; docs/guide/density.rst).
AVERAGED_MIXTURES = 20


# One function at a time runs under the limit (one_blas_thread). OpenBLAS's
# thread count is one setting for the whole process: two threads that each
# set it and restore what they found would leave it at one thread whenever
# they overlap, the second "restoring" the first's limit.
_BLAS_LIMIT_LOCK = threading.RLock()


def _new_blas_limit_lock():
    """A fresh lock in a forked child: one held by another thread at the fork stays held."""
    global _BLAS_LIMIT_LOCK
    _BLAS_LIMIT_LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_new_blas_limit_lock)


def one_blas_thread(function):
    """Run ``function`` with the BLAS library limited to one thread.

    EM on the latent codes makes thousands of BLAS calls on arrays a few
    columns wide, too small for threads to share, and OpenBLAS wakes its
    threads for each one all the same (docs/guide/scaling.rst, "Threads").
    scikit-learn's KMeans limits BLAS in its loops in the same way. The
    limit is lifted when ``function`` returns. skvae's functions so wrapped
    run one at a time in a process, so that fits in several threads do not
    leave the limit behind. threadpoolctl lets one thread at a time set
    OpenBLAS's limit: while another thread holds it (inside its own
    ``threadpool_limits``), the search runs with the threads it finds.
    """

    @functools.wraps(function)
    def limited(*args, **kwargs):
        with _BLAS_LIMIT_LOCK, threadpool_limits(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return limited


@dataclass
class LinearStart:
    """A linear-Gaussian model in the form :meth:`VAEModule.initialize_linear` takes."""

    decoder_weight: np.ndarray  # (n_features, n_components)
    decoder_bias: np.ndarray  # (n_features,)
    encoder_weight: np.ndarray  # (n_components, n_features)
    encoder_bias: np.ndarray  # (n_components,)
    posterior_std: np.ndarray  # (n_components,)
    noise_variance: np.ndarray  # (n_features,)
    prior_weights: np.ndarray | None = None  # (K,)
    prior_means: np.ndarray | None = None  # (K, n_components)
    prior_cholesky: np.ndarray | None = None  # (K, n_components, n_components)
    # The BIC search that chose the mixture, for :func:`larger_prior`.
    prior_search: object | None = field(default=None, repr=False)

    @property
    def prior_components(self):
        return 1 if self.prior_weights is None else len(self.prior_weights)


# Factor analysis (the start of a per-feature variance with fewer latent
# dimensions than features) stops once an iteration gains less than FA_TOL
# nats per row, after at most FA_BUDGET / n_features**3 iterations (each an
# eigendecomposition of the covariance), within [FA_MIN_ITER, FA_MAX_ITER].
FA_TOL = 1e-8
FA_BUDGET = 1e9
FA_MIN_ITER, FA_MAX_ITER = 3, 1000

# The start's noise variance is at least this fraction of the covariance's
# largest eigenvalue (_noise_floor): its narrowest posterior is then twice
# the encoder's floor on standard deviations, STD_FLOOR.
START_NOISE_FLOOR = (2 * STD_FLOOR) ** 2


def _noise_floor(noise, min_variance, largest_eigenvalue):
    """The decoder noise, at least ``min_variance`` and within the encoder's reach.

    The posterior's standard deviation along an eigenvector is
    ``sqrt(noise / eigenvalue)``; the encoder cannot go below ``STD_FLOOR``,
    and a proposal much wider than the posterior ruins the importance
    weights, so the noise keeps the narrowest posterior at twice the floor.
    """
    return max(noise, min_variance, START_NOISE_FLOOR * largest_eigenvalue)


def shrunk_covariance(Z, shrinkage, covariance=None):
    r"""Covariance of the rows of Z with its correlations shrunk toward zero.

    :math:`(1 - s) S + s \operatorname{diag}(S)`: the variances are kept and
    every correlation is multiplied by :math:`1 - s` (Ledoit and Wolf 2004's
    estimator of the correlation matrix, shrunk toward the identity, in the
    units of Z). ``shrinkage="auto"`` takes :math:`s` from
    :func:`sklearn.covariance.ledoit_wolf_shrinkage` on the rows scaled to
    unit variance, whose target, the identity, is then that diagonal.
    ``covariance``, if given, is shrunk instead of that of Z's rows (which
    still choose :math:`s`).
    """
    if covariance is None:
        covariance = np.atleast_2d(np.cov(Z, rowvar=False, bias=True))
    if shrinkage == "auto":
        spread = np.sqrt(np.diag(covariance))
        spread = np.where(spread > 0, spread, 1.0)
        # One row has no correlations to shrink (and would make sklearn warn).
        shrinkage = ledoit_wolf_shrinkage(Z / spread) if min(Z.shape) > 1 else 0.0
    if not shrinkage:
        return covariance
    return (1 - shrinkage) * covariance + shrinkage * np.diag(np.diag(covariance))


def resolution_variance(Z):
    """Per column of Z, the variance of a rounding error on its grid of values.

    ``g ** 2 / 12``, with ``g`` the smallest gap between the column's distinct
    observed values (NaN ignored): the variance of an error uniform over one
    step of the grid. Data rounded to that grid (counts, codes, binary flags)
    say nothing about a spread below it. 0 for a column with fewer than two
    distinct values; near 0 for continuous data, whose gaps are tiny.
    """
    out = np.zeros(Z.shape[1])
    for j, column in enumerate(Z.T):
        values = np.unique(column[~np.isnan(column)])
        if values.size > 1:
            out[j] = np.diff(values).min() ** 2 / 12
    return out


def probabilistic_pca(
    Z,
    n_components,
    min_variance,
    shrinkage=0.0,
    variance_floor=None,
    moments=None,
    per_feature_noise=False,
):
    r"""Maximum-likelihood probabilistic PCA of Z, with its exact posterior.

    With the eigendecomposition :math:`S = U \Lambda U^\top` of the covariance
    of Z, :math:`W = U_q (\Lambda_q - \sigma^2)^{1/2}`, where the noise
    :math:`\sigma^2` is the mean of the discarded eigenvalues (Tipping and
    Bishop 1999). With as many components as features nothing is discarded:
    any :math:`\sigma^2` below the smallest eigenvalue gives the same, full
    covariance, and half of it is taken (floored at ``min_variance``), small
    enough to leave the hidden layers room and large enough to keep the
    training gradients tame. The posterior is
    :math:`N(\Lambda_q^{-1} W^\top (x - b), \sigma^2 \Lambda_q^{-1})`,
    diagonal, so a diagonal encoder represents it exactly.

    With ``per_feature_noise`` and fewer components than features, the
    noise is one variance per feature, as a per-feature decoder variance
    has it: the maximum-likelihood factor analysis of :math:`S`
    (:func:`factor_analysis`), which probabilistic PCA's isotropic noise
    fits worse wherever the features' noise differs.

    With ``shrinkage``, :math:`S` is :func:`shrunk_covariance`'s: the
    solution is then the maximum a posteriori one under a prior that pulls
    the correlations toward zero, no longer the maximum-likelihood one.
    ``variance_floor`` (per feature, or None) is a floor on the diagonal of
    :math:`S`. ``moments``, a ``(mean, covariance)`` pair, replaces the mean
    and covariance of Z's rows, as :func:`~skvae._incomplete.incomplete_gaussian`
    estimates them where rows had missing entries (Z then holds the rows
    completed with draws from their conditionals).
    """
    n_features = Z.shape[1]
    bias, covariance = Z.mean(0), None
    if moments is not None:
        bias, covariance = moments[0], moments[1].copy()
    covariance = shrunk_covariance(Z, shrinkage, covariance)
    if variance_floor is not None:
        diagonal = np.diag_indices(n_features)
        covariance[diagonal] = np.maximum(covariance[diagonal], variance_floor)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues = np.maximum(eigenvalues[order], 0.0)
    eigenvectors = eigenvectors[:, order]
    if n_components < n_features:
        noise = eigenvalues[n_components:].mean()
    else:
        noise = 0.5 * eigenvalues[-1]
    noise = _noise_floor(noise, min_variance, eigenvalues[0])
    if per_feature_noise and n_components < n_features:
        floor = _noise_floor(0.0, min_variance, eigenvalues[0])
        return factor_analysis(covariance, bias, n_components, noise, floor)
    kept = np.maximum(eigenvalues[:n_components], noise * (1 + 1e-6))
    weight = eigenvectors[:, :n_components] * np.sqrt(kept - noise)
    encoder_weight = (weight / kept).T
    return LinearStart(
        decoder_weight=weight,
        decoder_bias=bias,
        encoder_weight=encoder_weight,
        encoder_bias=-encoder_weight @ bias,
        posterior_std=np.sqrt(noise / kept),
        noise_variance=np.full(n_features, noise),
    )


def factor_analysis(covariance, bias, n_components, noise, floor):
    r"""Maximum-likelihood factor analysis of a covariance matrix, with its posterior.

    The model :math:`x \sim N(b, W W^\top + \Psi)`, :math:`\Psi` diagonal.
    Given :math:`\Psi`, the best :math:`W` is
    :math:`\Psi^{1/2} U_q (\Lambda_q - I)^{1/2}`, from the eigenvectors of
    :math:`\Psi^{-1/2} S \Psi^{-1/2}`; then :math:`\Psi` becomes the
    diagonal of :math:`S - W W^\top`, floored at ``floor``
    (:class:`~sklearn.decomposition.FactorAnalysis`'s iteration, Barber 2012,
    on :math:`S` rather than on rows). It starts from :math:`\Psi =`
    ``noise`` times the identity, where its first :math:`W` is probabilistic
    PCA's, and returns the iterate of highest likelihood, so the start is
    never worse than probabilistic PCA's. The posterior is
    :math:`N(\Lambda_q^{-1} W^\top \Psi^{-1} (x - b), \Lambda_q^{-1})`:
    diagonal, as the encoder needs. ``floor`` keeps the narrowest posterior
    within the encoder's reach, as for probabilistic PCA (:func:`_noise_floor`).
    """
    n_features = covariance.shape[0]
    variances = np.diag(covariance)
    psi = np.maximum(np.full(n_features, noise), floor)
    iterations = int(np.clip(FA_BUDGET / n_features**3, FA_MIN_ITER, FA_MAX_ITER))
    best, previous = None, -np.inf
    for _ in range(iterations):
        root = np.sqrt(psi)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance / np.outer(root, root))
        leading = eigenvalues[::-1][:n_components]
        top = np.maximum(leading, 1.0)
        # log|C| + tr(C^-1 S), C = W W^T + Psi at the best W: twice the
        # negative log-likelihood per row, less n_features log 2 pi.
        deviance = np.log(psi).sum() + np.log(top).sum() + (leading / top).sum()
        deviance += eigenvalues[: n_features - n_components].sum()
        log_likelihood = -0.5 * deviance
        if best is None or log_likelihood > best[0]:
            best = (log_likelihood, psi, leading, eigenvectors)
        if log_likelihood - previous < FA_TOL:
            break
        previous = log_likelihood
        vectors = eigenvectors[:, ::-1][:, :n_components]
        weight = root[:, None] * vectors * np.sqrt(top - 1.0)
        psi = np.maximum(variances - (weight**2).sum(1), floor)
    _, psi, eigenvalues, eigenvectors = best
    root = np.sqrt(psi)
    kept = np.maximum(eigenvalues, 1.0 + 1e-6)
    vectors = eigenvectors[:, ::-1][:, :n_components]
    weight = root[:, None] * vectors * np.sqrt(kept - 1.0)
    encoder_weight = (np.sqrt(kept - 1.0) / kept)[:, None] * (vectors / root[:, None]).T
    return LinearStart(
        decoder_weight=weight,
        decoder_bias=bias,
        encoder_weight=encoder_weight,
        encoder_bias=-encoder_weight @ bias,
        posterior_std=1.0 / np.sqrt(kept),
        noise_variance=psi,
    )


@one_blas_thread
def mixture_prior(
    start,
    Z,
    n_components,
    random_state,
    min_variance,
    structure=None,
    n_averaged=1,
    also=(),
):
    """Add a mixture prior fitted to the latent codes of ``start``.

    Fits a full-covariance Gaussian mixture with ``n_components`` components
    to the latent codes of the rows of Z; with ``n_components="auto"``, the
    mixture of lowest BIC among those with at most as many parameters as
    rows (:func:`_bic_path`), and the start returned keeps that search
    (``prior_search``) for :func:`larger_prior`. ``structure``, a
    ``(covariance_type, n_components)`` pair, fits that mixture instead,
    unless it has more components than Z has rows. When one component wins,
    the start is returned with the N(0, I) prior, which is then already
    right (and, for ``"auto"``, its search).

    With as many latent dimensions as features, the codes are the whitened
    rows, ``W^-1 (x - b)`` with ``W = U Lambda^{1/2}``: the data-space model
    is then the mixture itself, convolved with the decoder noise, which is
    set to half the smallest variance of any component in any direction (so
    that a narrow component, such as a spike of repeated values, survives)
    and deconvolved from the prior's covariances (where the floor on the
    noise is above that, the mixture is followed as closely as the noise
    allows). With fewer, the codes are the posterior means of the
    probabilistic PCA, narrower than z by the posterior variance, which is
    added back to each component's covariance.

    With ``n_averaged`` above 1, the prior is the average of that many
    mixtures of the structure chosen, or, with ``also`` (more structures,
    as :func:`larger_prior` returns them after the first), of that
    structure and those in turn (:func:`averaged_mixture`).
    """
    codes = _Codes(start, Z, min_variance)
    if structure is not None and structure[1] > codes.values.shape[0]:
        # Chosen on more rows (a structure is kept for warm-started refits)
        # than these: more components than rows cannot be fitted.
        structure = None
    if structure is None and n_components != "auto":
        n_rows = codes.values.shape[0]
        if n_components > n_rows:
            raise ValueError(
                f"prior_components={n_components} is more than the rows the "
                f"prior's mixture is fitted on, n_samples={n_rows} (the rows "
                f"the linear start is fitted on: at most {START_ROWS:,} of the "
                "training rows, less any held out for early stopping or "
                "standardize='auto'). "
                "Use fewer components, or prior_components='auto'."
            )
    if structure is not None or n_components != "auto":
        covariance_type, k = structure or ("full", n_components)
        mixture = fit_gaussian_mixture(codes.values, k, covariance_type, random_state)
        return codes.start(
            averaged_mixture(mixture, codes.values, random_state, n_averaged, also)
        )
    path = _bic_path(codes.values, random_state)
    if not path:
        return start
    chosen = min(path, key=lambda fit: fit[1])[0]
    averaged = averaged_mixture(chosen, codes.values, random_state, n_averaged)
    return replace(
        codes.start(averaged), prior_search=_Search(codes, path, chosen, random_state)
    )


def averaged_mixture(mixture, codes, random_state, n_mixtures, also=()):
    """The equal-weight average of ``mixture`` and ``n_mixtures - 1`` more mixtures.

    Each of the others is a Gaussian mixture of the same number of components
    and covariance type, fitted by EM to the same ``codes`` from its own
    random initialization (seeds drawn from ``random_state``; the fits of
    one structure side by side, :func:`~skvae._mixture.fit_mixtures`, which
    takes GaussianMixture's steps); with ``also``,
    ``(covariance_type, n_components)`` pairs, the others take
    ``mixture``'s structure and those in turn, as far as the members go (a
    structure with more components than codes is left out, as
    :func:`mixture_prior` leaves out a first structure). Their average,
    ``(1 / n) sum_m p_m(z)``, is itself a Gaussian mixture, with
    ``1 / n_mixtures`` of each member's weights. EM
    ends in a different local optimum from each start, and each overfits in
    its own way; averaging them is the ensemble averaging of Gaussian mixture
    density estimates of Ormoneit and Tresp (1998, "Averaging, maximum
    penalized likelihood and Bayesian estimation for improving Gaussian
    mixture probability density estimates", IEEE Trans. Neural Networks
    9(4)), and by Jensen's inequality the average gives every row at least
    the mean of the members' log-densities. A member whose EM fails (a
    component collapsing onto too few rows for its covariance) is left out.
    Returns ``mixture`` itself for ``n_mixtures`` 1, or a single component
    without ``also`` (which EM fits the same from every start).
    """
    structures = [(mixture.covariance_type, mixture.n_components)]
    structures += [s for s in also if s[1] <= codes.shape[0]]
    if n_mixtures <= 1 or (len(structures) == 1 and mixture.n_components == 1):
        return mixture
    seeds = np.random.RandomState(random_state).randint(
        np.iinfo(np.int32).max, size=n_mixtures - 1
    )
    # Member i (from 1; 0 is ``mixture``) takes structure i mod len(structures)
    # and seed i - 1. The members of each structure are fitted side by side
    # (fit_mixtures, GaussianMixture's EM batched over them).
    by_structure = {}
    for index in range(1, n_mixtures):
        by_structure.setdefault(structures[index % len(structures)], []).append(index)
    fitted = {}
    for (covariance_type, k), indices in by_structure.items():
        fits = fit_mixtures(codes, k, covariance_type, seeds[np.array(indices) - 1])
        fitted.update(zip(indices, fits, strict=True))
    # A member whose covariance became singular (None) is left out.
    members = [mixture] + [fitted[i] for i in sorted(fitted) if fitted[i] is not None]
    return _Average(
        weights_=np.concatenate([m.weights_ for m in members]) / len(members),
        means_=np.concatenate([m.means_ for m in members]),
        covariances_=np.concatenate([_full_covariances(m) for m in members]),
    )


@dataclass
class _Average:
    """An average of Gaussian mixtures, in the attributes :meth:`_Codes.start` reads."""

    weights_: np.ndarray  # (K,)
    means_: np.ndarray  # (K, q)
    covariances_: np.ndarray  # (K, q, q)
    covariance_type: str = "full"

    @property
    def n_components(self):
        return len(self.weights_)


@one_blas_thread
def larger_prior(start, held_out):
    """A larger mixture prior than ``start``'s that ``held_out`` rows clearly prefer.

    BIC chooses the mixture prior with a penalty of ``log(n) / 2`` per
    parameter, and :func:`mixture_prior` counts parameters against rows: on
    data with few rows per parameter (a full covariance in 27 dimensions has
    405) the search stops before the clusters are all found, and on large
    data BIC stops short of the mixture that generalizes best. This goes on
    with the search past that count, scores every mixture of the search on
    the held-out rows (in the units of the start), and tries larger mixtures
    of the covariance type they score best (:func:`_grown_mixtures`). The
    candidate is the mixture with the fewest parameters whose held-out score
    is within one standard error of the best one's (the one-standard-error
    rule: held-out rows that choose among many mixtures flatter the one they
    choose). If it has more parameters than BIC's choice and gives the
    held-out rows a higher log-likelihood than ``start`` by more than
    ``SIGNIFICANCE`` standard errors of the per-row gain, returns the
    ``(covariance_type, n_components)`` of the candidate, followed by those
    of the larger mixtures within one standard error of the best (the
    held-out rows cannot tell them apart; an average of mixtures, which
    the kept start's prior is, gains from the larger ones, whose variance
    the average removes), else None (also for a start without a BIC
    search). Mixtures under which a held-out row's log-density is not
    finite take no part.

    With fewer than ``CV_MAX_HELD_OUT_ROWS`` held-out rows, the mixtures
    larger than BIC's choice within one standard error of the best are
    compared with BIC's choice by cross-validation on all the rows instead,
    which then decides (:func:`_cross_validated_choice`), unless one of them
    cannot be cross-validated.
    """
    search = start.prior_search
    if search is None:
        return None
    codes = search.codes
    path = _bic_path(
        codes.values, search.random_state, within_row_count=False, fitted=search.path
    )
    scored = _finite(
        (mixture, start_log_likelihood(codes.start(mixture), held_out))
        for mixture, _, _ in path
    )
    if not scored:
        return None
    scored += _grown_mixtures(codes, scored, held_out, search.random_state)
    if len(held_out) < CV_MAX_HELD_OUT_ROWS:
        cross_validated = _cross_validated_choice(search, scored, held_out)
        if cross_validated is not _UNDECIDED:
            return cross_validated
    candidate = _one_standard_error(scored)
    if _n_parameters(candidate) <= _n_parameters(search.chosen):
        return None
    gain = dict(scored)[candidate] - start_log_likelihood(start, held_out)
    if not clearly_better(gain):
        return None
    larger = _larger_and_close(scored, candidate, _n_parameters)
    return tuple(
        (mixture.covariance_type, mixture.n_components)
        for mixture in (candidate, *larger)
    )


# What _cross_validated_choice returns where it cannot decide.
_UNDECIDED = object()


def _cross_validated_choice(search, scored, held_out):
    """Of the mixtures held-out rows cannot tell apart, the one CV prefers.

    A few hundred held-out rows put a standard error of a few tenths of a
    nat on a mixture's mean score, as much as separates mixtures of
    neighbouring sizes, and the one-standard-error rule then falls back on
    the smallest of them. The mixtures of ``scored`` larger than BIC's
    choice and within one standard error of the best are compared here
    instead with BIC's choice by ``CV_FOLDS``-fold cross-validation on all
    the rows, the search's and the held-out ones, each scored by mixtures
    of the same structure fitted without it (:func:`_cross_validated`).
    If the best of them beats BIC's choice by more than ``SIGNIFICANCE``
    standard errors of the per-row gain, returns its
    ``(covariance_type, n_components)`` followed by those of the larger
    ones within one standard error of it, as :func:`larger_prior` does,
    else None; ``_UNDECIDED`` where none is close, or one has too many
    components for a fold's rows or a non-finite score.
    """
    codes, chosen = search.codes, search.chosen
    close = _larger_and_close(scored, chosen, _n_parameters)
    if not close:
        return _UNDECIDED
    structures = [(m.covariance_type, m.n_components) for m in (chosen, *close)]
    scores = _cross_validated(codes, held_out, structures, search.random_state)
    if scores is None:
        return _UNDECIDED
    cross_validated = [(structure, scores[structure]) for structure in structures[1:]]
    best = _best(cross_validated)[0]
    if not clearly_better(scores[best] - scores[structures[0]]):
        return None
    q = codes.values.shape[1]
    return (
        best,
        *_larger_and_close(
            cross_validated, best, lambda structure: _parameter_count(*structure, q)
        ),
    )


def _cross_validated(codes, held_out, structures, random_state):
    """Per-row log-likelihoods of each structure by cross-validation.

    The rows are those of ``codes`` and ``held_out`` (in the units of the
    start), split into ``CV_FOLDS`` folds; each fold's rows are scored under
    the start at the mixture of that ``(covariance_type, n_components)``
    fitted to the codes of the other folds. The linear map from codes to
    rows (and, with as many latent dimensions as features, the basis and
    the noise floor) is the start's, fitted to the search's rows: every
    structure shares it, so that it cancels from their comparison. Returns
    a dict from structure to the scores of all rows, or None (before any
    fit) if a structure has more components than a fold's other rows can
    fit (``q + 1`` rows each), or if a structure has a non-finite score.
    """
    rows = np.vstack([codes.rows, held_out])
    # Held-out rows' missing entries at the mean (0), for their codes only.
    values = np.vstack([codes.values, codes.encode(np.nan_to_num(held_out))])
    folds = list(KFold(CV_FOLDS, shuffle=True, random_state=random_state).split(values))
    fewest_rows, q = min(len(fitted) for fitted, _ in folds), values.shape[1]
    if any(k * (q + 1) > fewest_rows for _, k in structures):
        return None
    scores = {}
    for covariance_type, k in structures:
        row_scores = np.empty(len(rows))
        for fitted, scored in folds:
            mixture = fit_gaussian_mixture(
                values[fitted], k, covariance_type, random_state
            )
            row_scores[scored] = start_log_likelihood(
                codes.start(mixture, exact_single=False), rows[scored]
            )
        if not np.isfinite(row_scores).all():
            return None
        scores[covariance_type, k] = row_scores
    return scores


def _finite(scored):
    """The ``(mixture, per-row scores)`` pairs whose scores are all finite."""
    return [
        (mixture, scores) for mixture, scores in scored if np.isfinite(scores).all()
    ]


def _grown_mixtures(codes, scored, held_out, random_state):
    """Mixtures larger than a search's, while the held-out rows may still prefer them.

    For the covariance type of the mixture that ``held_out`` scores best
    among ``scored`` (``(mixture, per-row held-out scores)`` pairs), goes on
    past the largest mixture of that type with ``HELD_OUT_GROWTH`` times as
    many components each (at most ``MAX_HELD_OUT_COMPONENTS``), until the
    held-out mean has failed ``BIC_PATIENCE`` times in a row to beat the best
    so far, or the next mixture would have fewer than ``q + 1`` rows per
    component. The mixtures of ``scored`` larger than the best count as
    failures, unless the search reached ``MAX_PRIOR_COMPONENTS``: then it
    was its cap that stopped it, and the differences among its last
    mixtures are mostly those between local optima of EM. Returns the new
    pairs (those with finite scores).
    """
    best, best_scores = _best(scored)
    covariance_type = best.covariance_type
    sizes = [m.n_components for m, _ in scored if m.covariance_type == covariance_type]
    k, misses = max(sizes), sum(size > best.n_components for size in sizes)
    if k >= MAX_PRIOR_COMPONENTS:
        misses = 0
    n_samples, q = codes.values.shape
    best_mean, grown = best_scores.mean(), []
    while misses < BIC_PATIENCE and k < MAX_HELD_OUT_COMPONENTS:
        k = min(int(np.ceil(HELD_OUT_GROWTH * k)), MAX_HELD_OUT_COMPONENTS)
        if k * (q + 1) > n_samples:
            break
        mixture = fit_gaussian_mixture(codes.values, k, covariance_type, random_state)
        scores = start_log_likelihood(codes.start(mixture), held_out)
        if not np.isfinite(scores).all():
            misses += 1
            continue
        grown.append((mixture, scores))
        misses = misses + 1 if scores.mean() <= best_mean else 0
        best_mean = max(best_mean, scores.mean())
    return grown


def _one_standard_error(scored):
    """The mixture with the fewest parameters within one standard error of the best.

    ``scored`` holds ``(mixture, per-row held-out scores)`` pairs; the
    standard error is that of the mean per-row difference to the best.
    """
    return min(_close_to_best(scored), key=_n_parameters)


def _close_to_best(scored):
    """The mixtures of ``scored`` within one standard error of the best.

    ``scored`` holds ``(mixture, per-row scores)`` pairs; the standard error
    is that of the mean per-row difference to the best (which is among them).
    """
    best_scores = _best(scored)[1]
    return [
        mixture
        for mixture, scores in scored
        if (best_scores - scores).mean() <= _standard_error(best_scores - scores)
    ]


def _larger_and_close(scored, than, size):
    """Those of :func:`_close_to_best` larger by ``size`` than ``than``, smallest first."""
    return sorted(
        (item for item in _close_to_best(scored) if size(item) > size(than)), key=size
    )


def _best(scored):
    """The ``(mixture, per-row scores)`` pair of the highest mean score."""
    return max(scored, key=lambda pair: pair[1].mean())


def _n_parameters(mixture):
    """The free parameters of a fitted Gaussian mixture."""
    k, q = mixture.means_.shape
    return _parameter_count(mixture.covariance_type, k, q)


def _parameter_count(covariance_type, k, q):
    """Free parameters of ``k`` Gaussians in ``q`` dimensions ("full" or "diag")."""
    per_component = {"full": q + q * (q + 1) // 2, "diag": 2 * q}
    return k * per_component[covariance_type] + k - 1


@dataclass
class _Search:
    """A BIC search of :func:`mixture_prior`: the codes, the mixtures fitted."""

    codes: "_Codes"
    path: list
    chosen: GaussianMixture
    random_state: int


class _Codes:
    """The latent codes of the rows of Z under ``start``, and the start at a mixture."""

    def __init__(self, start, Z, min_variance):
        self.base, self.min_variance, self.rows = start, min_variance, Z
        self.full = start.decoder_weight.shape[0] == start.decoder_weight.shape[1]
        if self.full:
            covariance = np.atleast_2d(np.cov(Z, rowvar=False, bias=True))
            eigenvalues, eigenvectors = np.linalg.eigh(covariance)
            self.eigenvalues = np.maximum(eigenvalues, min_variance)
            self.weight = eigenvectors * np.sqrt(self.eigenvalues)
            self.encoder_weight = (eigenvectors / np.sqrt(self.eigenvalues)).T
        self.values = self.encode(Z)

    def encode(self, Z):
        """The latent codes of the rows of Z (in the units of the start)."""
        if self.full:
            return (Z - self.base.decoder_bias) @ self.encoder_weight.T
        return Z @ self.base.encoder_weight.T + self.base.encoder_bias

    def start(self, mixture, exact_single=True):
        """A new start with ``mixture`` as its prior.

        With ``exact_single``, the base start for a mixture of one component
        (its exact fit to the rows); otherwise that component, as for any
        other mixture, say one fitted to some of the rows only.
        """
        if mixture.n_components == 1 and exact_single:
            return self.base
        covariances = _full_covariances(mixture)
        if self.full:
            weight, eigenvalues = self.weight, self.eigenvalues
            in_data = weight @ covariances @ weight.T
            smallest = 0.5 * min(np.linalg.eigvalsh(c)[0] for c in in_data)
            noise = _noise_floor(smallest, self.min_variance, eigenvalues.max())
            likelihood_variance = np.diag(noise / eigenvalues)  # of z given x
            covariances = covariances - likelihood_variance
            if noise > smallest:
                # A component narrower than the decoder noise allows: the
                # model cannot follow it exactly. Its prior is kept at least
                # half as wide as the likelihood of z in every direction, so
                # that the posterior is never much narrower than the
                # encoder's proposal (which would ruin the importance weights).
                values, vectors = np.linalg.eigh(covariances)
                values = np.maximum(values, 0.0)
                covariances = (vectors * values[:, None, :]) @ np.swapaxes(
                    vectors, 1, 2
                )
                covariances = covariances + 0.5 * likelihood_variance
            bias = self.base.decoder_bias
            start = LinearStart(
                decoder_weight=weight,
                decoder_bias=bias,
                encoder_weight=self.encoder_weight,
                encoder_bias=-self.encoder_weight @ bias,
                posterior_std=np.sqrt(noise / eigenvalues),
                noise_variance=np.full(weight.shape[0], noise),
            )
        else:
            start = replace(self.base)
            covariances = covariances + np.diag(start.posterior_std**2)
        start.prior_weights = mixture.weights_
        start.prior_means = mixture.means_
        start.prior_cholesky = np.linalg.cholesky(covariances)
        return start


def _bic_path(codes, random_state, within_row_count=True, fitted=()):
    """The Gaussian mixtures of the codes that the BIC search fits.

    Tries full and diagonal covariances with 1 to ``MAX_PRIOR_COMPONENTS``
    components each (diagonal ones fit more components where there are few
    rows per parameter), stopping a search once BIC has risen
    ``BIC_PATIENCE`` times in a row and, with ``within_row_count``, at
    mixtures with more parameters than rows (never more components than
    rows). Returns ``(mixture, bic, within)`` triples, ``within`` saying
    whether the mixture has at most as many parameters as rows; empty when
    there are too few rows for any mixture to say more than one Gaussian.
    The mixtures of a search already run (``fitted``, such triples) are
    taken from it rather than fitted again.
    """
    n_samples, q = codes.shape
    if n_samples <= q + 1:
        return []
    known = {(m.covariance_type, m.n_components): (m, bic) for m, bic, _ in fitted}
    path = []
    for covariance_type in ("full", "diag"):
        rises, last = 0, np.inf
        for k in range(1, min(MAX_PRIOR_COMPONENTS, n_samples) + 1):
            within = k == 1 or _parameter_count(covariance_type, k, q) <= n_samples
            if within_row_count and not within:
                break
            if (covariance_type, k) in known:
                mixture, bic = known[covariance_type, k]
            else:
                mixture = fit_gaussian_mixture(codes, k, covariance_type, random_state)
                bic = mixture.bic(codes)
            path.append((mixture, bic, within))
            rises = rises + 1 if bic >= last else 0
            last = min(last, bic)
            if rises >= BIC_PATIENCE:
                break
    return path


def clearly_better(gain):
    """Whether a mean per-row gain exceeds ``SIGNIFICANCE`` standard errors."""
    return gain.mean() > SIGNIFICANCE * _standard_error(gain)


def _standard_error(values):
    """The standard error of the mean of ``values`` (a 1-d array)."""
    return values.std() / np.sqrt(values.size)


def _full_covariances(mixture):
    """A fitted mixture's covariances as full matrices, (K, q, q)."""
    if mixture.covariance_type == "diag":
        return np.stack([np.diag(c) for c in mixture.covariances_])
    return mixture.covariances_


def start_log_likelihood(start, Z):
    """Log-density of each row of Z under the linear-Gaussian model ``start``.

    The model is the mixture of Gaussians with means ``W mu_k + b`` and
    covariances ``W Sigma_k W^T + diag(noise)`` (one component, N(b, W W^T +
    diag(noise)), for the N(0, I) prior), in the units of Z. Missing entries
    (NaN) are integrated out: a row's density is that of its observed ones.
    """
    W, b = start.decoder_weight, start.decoder_bias
    if start.prior_weights is None:
        weights, means = np.ones(1), np.zeros((1, W.shape[1]))
        covariances = np.eye(W.shape[1])[None]
    else:
        weights, means = start.prior_weights, start.prior_means
        covariances = start.prior_cholesky @ np.swapaxes(start.prior_cholesky, 1, 2)
    incomplete = np.isnan(Z).any()
    log_terms = []
    for weight, mean, covariance in zip(weights, means, covariances, strict=True):
        data_covariance = W @ covariance @ W.T + np.diag(start.noise_variance)
        if incomplete:
            log_terms.append(
                np.log(weight) + observed_log_density(Z, W @ mean + b, data_covariance)
            )
            continue
        cholesky = np.linalg.cholesky(data_covariance)
        white = np.linalg.solve(cholesky, (Z - (W @ mean + b)).T)
        log_terms.append(
            np.log(weight)
            - 0.5 * (white**2).sum(0)
            - np.log(np.diagonal(cholesky)).sum()
            - 0.5 * Z.shape[1] * np.log(2 * np.pi)
        )
    return np.logaddexp.reduce(np.array(log_terms), axis=0)
