"""Gaussian mixtures fitted by EM in torch, many at once.

:func:`fit_mixtures` runs the EM algorithm of scikit-learn's
:class:`~sklearn.mixture.GaussianMixture` (k-means initialization,
``reg_covar`` added to each covariance, stopping when the mean
log-likelihood changes by less than ``tol``) from several random
initializations at once, batched over the mixtures and their components.
The average of a kept start's prior
(:func:`skvae._linear_start.averaged_mixture`) needs nineteen such refits
of one structure, which took most of a default fit's time on the larger
data sets: GaussianMixture loops over the components in Python, with an
``n x q`` array for each, where here each step is one matrix product for
every component of every mixture, on torch's threads.
:func:`fit_gaussian_mixture` fits one mixture, the same way, where that is
faster than GaussianMixture's loop: full covariances with many components
in few dimensions (the largest mixtures of the BIC search and the held-out
growth of the prior); with a few components, or many dimensions, there is
too little to batch, and GaussianMixture is faster."""

import contextlib
import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state

# GaussianMixture's defaults.
REG_COVAR = 1e-6
TOL = 1e-3
MAX_ITER = 100
# fit_gaussian_mixture takes the batched EM for full covariances with at
# least this many components, and this many per dimension of X: there it
# was 1.15 to 7.9 times as fast as GaussianMixture (1,000 to 20,000 rows, 4
# to 36 dimensions, 8 to 64 components, one or two threads); below, down
# to 0.17 times.
SINGLE_MIN_COMPONENTS = 8
SINGLE_COMPONENTS_PER_DIMENSION = 1.5
# At most this many float64 values in each array of a batch (16 MB): the
# members' (rows, components) responsibilities, their (components, q, q)
# covariances; more mixtures are fitted in several batches.
BATCH_ELEMENTS = 2**21
# At most this many values in each chunk of rows of the design matrix
# (8 MB); it is kept between steps when all rows fit in one chunk.
OUTER_ELEMENTS = 2**20


@dataclass(eq=False)  # compared and hashed by identity, as estimators are
class FittedMixture:
    """A Gaussian mixture's parameters, named as GaussianMixture names them."""

    weights_: np.ndarray  # (k,)
    means_: np.ndarray  # (k, q)
    covariances_: np.ndarray  # (k, q, q) for "full", (k, q) for "diag"
    covariance_type: str
    converged_: bool
    n_iter_: int

    @property
    def n_components(self):
        return len(self.weights_)


def fit_mixtures(
    X,
    n_components,
    covariance_type,
    seeds,
    *,
    reg_covar=REG_COVAR,
    tol=TOL,
    max_iter=MAX_ITER,
):
    """One Gaussian mixture of X per seed, fitted by EM as GaussianMixture fits it.

    Each mixture starts where ``GaussianMixture(n_components,
    covariance_type=covariance_type, random_state=seed)`` starts (the
    labels of one run of :class:`~sklearn.cluster.KMeans` from that seed)
    and takes the same steps, so that it ends at the same parameters up to
    rounding; the mixtures run side by side, each stopping when its own mean
    log-likelihood changes by less than ``tol`` or after ``max_iter`` steps.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    n_components : int
    covariance_type : {"full", "diag"}
    seeds : sequence of int
    reg_covar, tol, max_iter : float, float, int
        As for GaussianMixture.

    Returns
    -------
    mixtures : list of FittedMixture or None
        One per seed, in order; None where a covariance stopped being
        positive definite (where GaussianMixture raises its "ill-defined
        empirical covariance" error).
    """
    X = torch.as_tensor(np.asarray(X, dtype=np.float64), device="cpu")
    batch = _Batch(X, n_components, covariance_type, reg_covar)
    (n_samples, q), k = X.shape, n_components
    # Each member holds (rows, k) responsibilities, (k, width) sums and
    # coefficients and, for full covariances, (k, q, q) matrices.
    square = q * q if covariance_type == "full" else q
    per_member = k * max(n_samples, batch.width, square)
    per_batch = max(1, BATCH_ELEMENTS // per_member)
    fitted = []
    for start in range(0, len(seeds), per_batch):
        fitted += batch.fit(seeds[start : start + per_batch], tol, max_iter)
    return fitted


@contextlib.contextmanager
def _fewer_distinct_rows_allowed():
    """Silence KMeans' warning that the rows have fewer distinct values than
    clusters (discrete data, such as binary features).

    The prior's search tries mixture sizes by itself and BIC or the held-out
    rows turn down those with duplicate components; the warning, a dozen of
    them per fit on binary data, told the user of nothing they could change.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Number of distinct clusters", ConvergenceWarning
        )
        yield


def fit_gaussian_mixture(X, n_components, covariance_type, random_state):
    """``GaussianMixture(n_components, covariance_type=covariance_type,
    random_state=random_state).fit(X)``, by the batched EM where that is faster.

    With full covariances, at least ``SINGLE_MIN_COMPONENTS`` components
    and ``SINGLE_COMPONENTS_PER_DIMENSION`` per feature, and an integer
    ``random_state``, the mixture is fitted by :func:`fit_mixtures` (the
    same start and steps, so the same parameters up to rounding, relative
    to the spread of the components' means about X's mean) and
    returned as a fitted GaussianMixture; ``lower_bound_`` and
    ``lower_bounds_`` are not set. Elsewhere, and where a covariance stops
    being positive definite (GaussianMixture then raises its own error),
    GaussianMixture fits it.
    """
    mixture = GaussianMixture(
        n_components, covariance_type=covariance_type, random_state=random_state
    )
    n_features = X.shape[1]
    if (
        covariance_type != "full"
        or n_components < SINGLE_MIN_COMPONENTS
        or n_components < SINGLE_COMPONENTS_PER_DIMENSION * n_features
        or not isinstance(random_state, numbers.Integral)
    ):
        with _fewer_distinct_rows_allowed():
            return mixture.fit(X)
    (fitted,) = fit_mixtures(X, n_components, "full", [random_state])
    if fitted is None:
        with _fewer_distinct_rows_allowed():
            return mixture.fit(X)
    if not fitted.converged_:
        warnings.warn(  # GaussianMixture's warning
            "Best performing initialization did not converge. Try different "
            "init parameters, or increase max_iter, tol, or check for "
            "degenerate data.",
            ConvergenceWarning,
            stacklevel=2,
        )
    # The precisions as GaussianMixture computes them from the covariances.
    eye = np.eye(n_features)
    precisions_cholesky = np.stack(
        [
            linalg.solve_triangular(
                linalg.cholesky(covariance, lower=True), eye, lower=True
            ).T
            for covariance in fitted.covariances_
        ]
    )
    mixture.weights_ = fitted.weights_
    mixture.means_ = fitted.means_
    mixture.covariances_ = fitted.covariances_
    mixture.precisions_cholesky_ = precisions_cholesky
    mixture.precisions_ = precisions_cholesky @ precisions_cholesky.transpose(0, 2, 1)
    mixture.converged_ = fitted.converged_
    mixture.n_iter_ = fitted.n_iter_
    mixture.n_features_in_ = n_features
    return mixture


class _Batch:
    """EM for mixtures of one structure on the same rows, side by side.

    Each row's log-density under a Gaussian is a linear function of its
    features ``x_i``, their products ``x_i x_j`` (``i <= j``; the squares
    alone for diagonal covariances) and 1; those, one row of a design matrix
    ``A`` per row of X, make each E-step one matrix product ``A C`` for every
    component of every mixture (``C`` holding each component's coefficients),
    and each M-step one product ``R' A`` (``R`` the responsibilities), which
    holds every component's total weight, sums and second moments.
    Responsibilities and log-likelihoods are (mixtures, rows, components)
    arrays. The design matrix is made of the centred rows (EM is unchanged
    by a shift), so that the quadratic and linear terms stay small; k-means
    starts from the rows as given.
    """

    def __init__(self, X, n_components, covariance_type, reg_covar):
        if covariance_type not in ("full", "diag"):
            raise ValueError(f"covariance_type={covariance_type!r} is not supported")
        # k-means starts from the rows as given: on tied rows (counts,
        # codes) centring can change its labels, as its rounding changes.
        self.raw = X.numpy()
        self.center = X.mean(dim=0)
        self.X = X - self.center
        self.k = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        q = X.shape[1]
        if covariance_type == "full":
            self.upper = torch.triu_indices(q, q, device="cpu")
        else:
            self.upper = torch.arange(q, device="cpu").expand(2, q)
        self.n_products = self.upper.shape[1]
        self.width = self.n_products + q + 1  # of the design matrix
        self.chunk_rows = max(1, OUTER_ELEMENTS // self.width)
        self.design = None
        if X.shape[0] <= self.chunk_rows:
            self.design = self._design(self.X)

    def _design(self, rows):
        """The design matrix of ``rows``: products, features and 1."""
        i, j = self.upper
        ones = torch.ones(len(rows), 1, dtype=rows.dtype, device="cpu")
        return torch.cat([rows[:, i] * rows[:, j], rows, ones], dim=1)

    def _chunks(self):
        """(first row, design matrix) of consecutive chunks of the rows."""
        if self.design is not None:
            yield 0, self.design
            return
        for start in range(0, self.X.shape[0], self.chunk_rows):
            yield start, self._design(self.X[start : start + self.chunk_rows])

    def fit(self, seeds, tol, max_iter):
        X, k = self.X, self.k
        with _fewer_distinct_rows_allowed():
            labels = np.stack(
                [
                    KMeans(k, n_init=1, random_state=check_random_state(seed))
                    .fit(self.raw)
                    .labels_
                    for seed in seeds
                ]
            )
        resp = torch.zeros(len(seeds), X.shape[0], k, dtype=X.dtype, device="cpu")
        resp.scatter_(2, torch.as_tensor(labels, device="cpu")[..., None], 1.0)
        params, ok = self.m_step(resp)
        n_iter = np.zeros(len(seeds), dtype=int)
        converged = np.zeros(len(seeds), dtype=bool)
        failed = ~ok.numpy()
        lower_bound = np.full(len(seeds), -np.inf)
        for step in range(1, max_iter + 1):
            active = np.flatnonzero(~converged & ~failed)
            if active.size == 0:
                break
            index = torch.as_tensor(active, device="cpu")
            log_prob_norm, resp = self.e_step([p[index] for p in params])
            new, ok = self.m_step(resp)
            ok = ok.numpy()
            valid = torch.as_tensor(ok, device="cpu")
            for param, value in zip(params, new, strict=True):
                param[index[valid]] = value[valid]
            failed[active[~ok]] = True
            previous = lower_bound[active]
            lower_bound[active] = log_prob_norm.mean(dim=1).numpy()
            n_iter[active] = step
            converged[active] = ok & (np.abs(lower_bound[active] - previous) < tol)
        weights, means, covariances = (p.numpy() for p in params[:3])
        means = means + self.center.numpy()
        return [
            None
            if failed[m]
            else FittedMixture(
                weights_=weights[m],
                means_=means[m],
                covariances_=covariances[m],
                covariance_type=self.covariance_type,
                converged_=bool(converged[m]),
                n_iter_=int(n_iter[m]),
            )
            for m in range(len(seeds))
        ]

    def m_step(self, resp):
        """Parameters from responsibilities (mixtures, rows, k), and which are valid.

        Returns ``(weights, means, covariances, precision factor, log-det)``
        and a boolean tensor, False for a mixture with a covariance that is
        not positive definite (GaussianMixture's "ill-defined empirical
        covariance").
        """
        X, T = self.X, self.n_products
        q = X.shape[1]
        resp_t = resp.transpose(1, 2)  # (m, k, rows)
        sums = 0.0
        for start, design in self._chunks():
            sums = sums + resp_t[..., start : start + len(design)] @ design
        eps = 10 * torch.finfo(X.dtype).eps
        nk = sums[..., -1] + eps
        weights = nk / nk.sum(dim=1, keepdim=True)
        first = sums[..., T : T + q] / nk[..., None]
        second = sums[..., :T] / nk[..., None]
        # GaussianMixture's mean, sum(r x) / (sum(r) + eps), in the units
        # of the centred rows (an empty component's is X's origin), and its
        # covariance, sum(r (x - mean)(x - mean)') / (sum(r) + eps), expanded
        # in the moments about X's mean: exact up to rounding relative to the
        # squared distance of a component's mean from X's mean, where
        # GaussianMixture centres on each component; on whitened codes that
        # is far below reg_covar.
        means = first - eps * self.center / nk[..., None]
        mass = (sums[..., -1] / nk)[..., None]
        if self.covariance_type == "diag":
            covariances = second - 2 * means * first + means * means * mass
            covariances = covariances + self.reg_covar
            ok = (covariances > 0).flatten(1).all(dim=1)
            precision_factor = torch.rsqrt(covariances.clamp_min(np.finfo(float).tiny))
            log_det = torch.log(precision_factor).sum(dim=-1)
            return (weights, means, covariances, precision_factor, log_det), ok
        i, j = self.upper
        covariances = torch.empty(*resp_t.shape[:2], q, q, dtype=X.dtype, device="cpu")
        covariances[..., i, j] = second
        covariances[..., j, i] = second
        cross = means[..., :, None] * first[..., None, :]
        covariances = covariances - cross - cross.transpose(-1, -2)
        covariances = (
            covariances + means[..., :, None] * means[..., None, :] * mass[..., None]
        )
        covariances = covariances + self.reg_covar * torch.eye(
            q, dtype=X.dtype, device="cpu"
        )
        cholesky, info = torch.linalg.cholesky_ex(covariances)
        ok = (info == 0).all(dim=1)
        eye = torch.eye(q, dtype=X.dtype, device="cpu").expand_as(cholesky)
        # A failed factor is left as it is: its mixture is dropped.
        precision_factor = torch.linalg.solve_triangular(cholesky, eye, upper=False)
        precision_factor = precision_factor.transpose(-1, -2)  # upper, P = U U'
        log_det = torch.log(torch.diagonal(precision_factor, dim1=-2, dim2=-1)).sum(-1)
        return (weights, means, covariances, precision_factor, log_det), ok

    def e_step(self, params):
        """Each row's mean-normalized log-likelihood per mixture, and the responsibilities."""
        weights, means, _, precision_factor, log_det = params
        q = self.X.shape[1]
        i, j = self.upper
        if self.covariance_type == "diag":
            precision = precision_factor**2  # (m, k, q)
            quadratic = -0.5 * precision
            linear = precision * means
        else:
            precision = precision_factor @ precision_factor.transpose(-1, -2)
            # Off-diagonal products stand for both x_i x_j and x_j x_i.
            twice = torch.where(i == j, 1.0, 2.0).to(precision.dtype)
            quadratic = -0.5 * twice * precision[..., i, j]
            linear = (precision @ means[..., None])[..., 0]
        constant = (
            log_det
            + torch.log(weights)
            - 0.5 * (linear * means).sum(dim=-1)
            - 0.5 * q * math.log(2 * math.pi)
        )
        coefficients = torch.cat([quadratic, linear, constant[..., None]], dim=-1)
        coefficients = coefficients.transpose(1, 2)  # (m, T + q + 1, k)
        parts = [design @ coefficients for _, design in self._chunks()]
        log_prob = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        # One exponential per entry: the responsibilities and the
        # log-sum-exp over the components from the same exp(log_prob - max).
        # numpy's exp, in place on the same memory: torch's float64 exp on
        # the CPU took six times as long.
        largest = log_prob.amax(dim=2, keepdim=True)
        log_prob -= largest
        np.exp(log_prob.numpy(), out=log_prob.numpy())
        total = log_prob.sum(dim=2, keepdim=True)
        log_prob /= total
        return (largest + torch.log(total))[..., 0], log_prob
