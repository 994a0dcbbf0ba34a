"""From numpy to the device and back: the inference machinery on rows of X.

Functions with explicit inputs (a fitted module, the standardization, the
device), used by the estimators and by the benchmarks. Rows are processed in
chunks whose size bounds memory, on a float64 copy of the module, so that a
row's result does not depend on the rows scored with it.
"""

import copy

import numpy as np
import torch
from sklearn.utils import gen_batches

from ._device import fits_on_device, inference_dtype, make_generator
from ._likelihood import (
    ROW_SYSTEMS_MAX_COMPONENTS,
    full_gaussian_log_prob,
    gaussian_conditional_mean,
    gaussian_mixture_log_prob,
    linear_mixture_data_components,
    linear_mixture_factors,
    linear_mixture_log_prob,
    linear_mixture_posterior_mean,
    linear_mixture_posterior_mean_in_data_space,
    log_mean_exp,
)
from ._model import CPU_SCORE_CHUNK_ELEMENTS, SCORE_CHUNK_ELEMENTS
from ._units import log_jacobian, log_jacobian_rows, standardize_into


def to_tensor(X, mean, scale, dtype, device, order=None, stream=False, knots=None):
    """Standardize rows of X (optionally reordered) into a tensor on ``device``.

    ``knots``, where given, Gaussianize the standardized features.

    Returns the tensor, with missing entries set to 0, and the boolean mask
    of observed entries, or None when no entry is missing. With
    ``stream=True``, data too large for the device's free memory stay in
    host memory instead (their mask too), and training copies them over a
    chunk of batches at a time, through pinned memory.
    """
    streamed = stream and not fits_on_device(
        X.shape[0] * X.shape[1] * dtype.itemsize, device
    )
    out = torch.empty(X.shape, dtype=dtype, device="cpu")
    observed = standardize_into(out.numpy(), X, mean, scale, order, knots)
    mask = None if observed is None else torch.from_numpy(observed)
    if streamed:
        return out, mask
    return out.to(device), None if mask is None else mask.to(device)


def inference_module(module, device):
    """A copy of ``module`` on ``device``, in float64 (float32 on MPS), for scoring.

    Scoring in float64 makes the densities as precise as scikit-learn's and
    each row's result independent of the batch it is computed in. A copy per
    call also keeps concurrent calls from different threads apart. The copy
    moves to ``device`` before it changes dtype: an MPS tensor cannot be
    made float64 where it is.
    """
    return copy.deepcopy(module).to(device).to(inference_dtype(device))


def importance_draws(n_components, n_draws, seed, device, dtype):
    """Standard-normal draws of shape (n_draws, n_components), shared by every row.

    A scrambled Sobol' sequence mapped through the normal quantile function:
    quasi-random points cover the latent space more evenly than random
    draws, which matters because every row shares them, so their error does
    not average out over rows. Measured on held-out rows of real data, the
    spread of the mean score over scramblings fell by up to 3x at 64 draws.
    Past the Sobol' engine's 21,201 dimensions, seeded pseudo-random draws.
    """
    if n_components > torch.quasirandom.SobolEngine.MAXDIM:  # 21201
        eps = torch.randn(
            n_draws,
            n_components,
            generator=make_generator(seed, torch.device("cpu")),
            dtype=torch.float64,
            device="cpu",
        )
        return eps.to(device=device, dtype=dtype)
    engine = torch.quasirandom.SobolEngine(n_components, scramble=True, seed=seed)
    uniform = engine.draw(n_draws, dtype=torch.float64)
    # SobolEngine computes its first point, shift / 2**MAXBIT, in torch's
    # default dtype; redo it in float64 so that global setting cannot
    # change the scores.
    uniform[0] = engine.shift.to(torch.float64) / 2**engine.MAXBIT
    eps = torch.special.ndtri(uniform.clamp(1e-12, 1.0 - 1e-12))
    return eps.to(device=device, dtype=dtype)


@torch.no_grad()
def map_rows(
    module, X, fn, *, device, mean=None, scale=None, knots=None, width=1, extra=()
):
    """Apply ``fn(module_copy, rows, mask, *extra_rows)`` to chunks of rows of X.

    ``rows`` is a tensor in the inference dtype on ``device``, standardized
    with ``mean`` and ``scale`` (missing entries zero, ``mask`` the observed
    entries, or None if all are); with ``mean=None`` the rows are passed as
    they are; ``knots`` Gaussianize the standardized rows. ``extra`` is a
    tuple of arrays whose matching rows are passed along as tensors.
    ``width`` is the number of values each row expands to inside ``fn``
    (draws times layer width), which sets the chunk size so that memory
    stays bounded (``CPU_SCORE_CHUNK_ELEMENTS`` values per tensor on the
    CPU, ``SCORE_CHUNK_ELEMENTS`` on an accelerator). The results are
    collected in one float64 array.
    """
    module = inference_module(module, device)
    dtype = inference_dtype(device)
    bound = SCORE_CHUNK_ELEMENTS
    if device.type == "cpu":
        bound = CPU_SCORE_CHUNK_ELEMENTS
    rows = max(1, bound // max(width, 1))
    out = None
    for chunk in gen_batches(X.shape[0], rows):
        if mean is None:
            # A copy: X may be read-only (a memory map, a pandas view), and
            # torch takes no negative strides (a reversed view).
            x = torch.tensor(np.ascontiguousarray(X[chunk]), dtype=dtype, device=device)
            mask = None
        else:
            x, mask = to_tensor(X[chunk], mean, scale, dtype, device, knots=knots)
        more = [torch.tensor(a[chunk], dtype=dtype, device=device) for a in extra]
        result = fn(module, x, mask, *more).cpu().numpy()
        if out is None:
            out = np.empty((X.shape[0], *result.shape[1:]), dtype=np.float64)
        # Copied out at once: a small result kept alive between the chunks'
        # large temporaries would fragment the CPU heap.
        out[chunk] = result
        del x, mask, more, result
    return out


def log_likelihood(module, X, *, mean, scale, draws, device, knots=None):
    """IWAE estimate of log p(x_o) for each row of X, in the units of X.

    ``draws`` are the standard-normal draws of :func:`importance_draws`;
    ``knots``, where given, Gaussianize the standardized features, and the
    log-Jacobian of that map is included. Only the observed entries x_o of
    each row count; a row with none gets 0, the log-probability of observing
    nothing. Where the decoder is linear (``module.has_linear_decoder``: a
    Gaussian, ``module.is_gaussian``, or a Gaussian mixture), log p(x_o) is
    exact instead, and the draws are not used; it is computed in float64,
    on the CPU where the device has none (MPS, whose float32 would cancel
    most digits where a noise variance is small).
    """
    if module.is_gaussian:
        fn, width = _gaussian_scorer(), module.n_features
    elif module.has_linear_decoder:
        fn, width = _linear_mixture_scorer(), _linear_mixture_width(module)
    else:

        def fn(module, x, mask):
            return log_mean_exp(module.importance_log_weights(x, draws, mask), 1)

        width = draws.shape[0] * module.widest_layer
    log_px = map_rows(
        module,
        X,
        fn,
        device=device,
        mean=mean,
        scale=scale,
        knots=knots,
        width=width,
    )
    missing = np.isnan(X)
    if knots is not None:
        log_px -= log_jacobian_rows(X, mean, scale, knots)
        log_px[missing.all(1)] = 0.0
        return log_px
    if not missing.any():
        return log_px - log_jacobian(scale)
    log_px -= ~missing @ np.log(scale)
    log_px[missing.all(1)] = 0.0
    return log_px


def posterior_mean_fn(module):
    """``(fn, width)`` for :func:`map_rows`: E[z | x_o] of each row.

    Exact where the decoder is linear (``module.has_linear_decoder``;
    :func:`_linear_posterior_mean`, in float64, on the CPU where the device
    has none): its posterior is then known, for rows with missing entries
    too, which the encoder sees at the feature means where it was not
    trained on any. Every network gets the encoder's mean of q(z | x).
    """
    if module.has_linear_decoder:
        # A wide Gaussian (one latent dimension per feature, say): every row
        # in data space, through its factors, computed once.
        every_row = (
            module.is_gaussian and module.n_components > ROW_SYSTEMS_MAX_COMPONENTS
        )
        return _linear_posterior_mean(every_row), _linear_mixture_width(module)

    def encoded(module, x, mask):
        return module.encode(x, mask)[0]

    return encoded, module.widest_layer


def _linear_posterior_mean(every_row=False):
    """``fn(module, x, mask)``: E[z | x_o] of a linear decoder, exactly, in float64.

    In latent space (:func:`~skvae._likelihood.linear_mixture_posterior_mean`)
    but for the rows with missing entries of a model with more than
    ``ROW_SYSTEMS_MAX_COMPONENTS`` latent dimensions, which go through p(x)'s
    components in data space
    (:func:`~skvae._likelihood.linear_mixture_posterior_mean_in_data_space`,
    the components factorized once per call): in latent space each of their
    patterns would cost ``K q^3``, minutes for 1,500 rows of 300 features
    with 5 % missing. With ``every_row``, all rows go through data space.
    """
    components = _kept_components()

    def fn(module, x, mask):
        x, mask = _in_float64(x, mask)
        args = _linear_parameters(module, x)
        weight, _, _, log_weights, means, cholesky = args

        def latent(x, mask):
            return linear_mixture_posterior_mean(x, *args, mask)

        def data(x, mask):
            return linear_mixture_posterior_mean_in_data_space(
                x, weight, log_weights, means, cholesky, components(module, x), mask
            )

        if every_row:
            return data(x, mask)
        return _by_completeness(module, x, mask, latent, data)

    return fn


def _by_completeness(module, x, mask, latent, data):
    """``latent(x, mask)`` on every row, but ``data`` on a wide model's incomplete rows.

    Wide: more than ``ROW_SYSTEMS_MAX_COMPONENTS`` latent dimensions. The
    complete rows stay in latent space, which costs less than data space
    for them wherever q is below D, and gives each row the same result
    whatever rows are beside it.
    """
    if mask is None or module.n_components <= ROW_SYSTEMS_MAX_COMPONENTS:
        return latent(x, mask)
    complete = mask.all(1)
    incomplete = ~complete
    first = data(x[incomplete], mask[incomplete])
    out = first.new_empty((x.shape[0], *first.shape[1:]))
    out[incomplete] = first
    if complete.any():
        out[complete] = latent(x[complete], None)
    return out


def _linear_parameters(module, x):
    """A linear decoder's ``A``, ``c`` and variance and its prior's log
    weights, means and Cholesky factors, in ``x``'s dtype and on its device:
    the arguments of the linear-mixture functions of :mod:`._likelihood`."""
    weight, bias = module.linear_decoder()
    return tuple(
        t.to(x) for t in (weight, bias, module.variance, *module.prior_mixture())
    )


def _linear_mixture_width(module):
    """Values per row of the linear-mixture functions of :mod:`._likelihood`.

    ``(K, rows, q)`` per pattern, or, where rows with missing entries are
    solved row by row, their ``(rows, q, D)`` products; in data space,
    ``(rows, D)`` per component and ``(K, rows, q)``.
    """
    q = module.n_components
    if q <= ROW_SYSTEMS_MAX_COMPONENTS:
        return max(module.widest_layer, q * (module.n_features + q))
    return max(module.widest_layer, module.n_features, module.prior_components * q)


def conditional_mean_fn(module, draws):
    """``(fn, width)`` for :func:`map_rows`: E[x | x_o] of each row, in internal units.

    Exact where the decoder is linear (``module.has_linear_decoder``), in
    float64 as :func:`log_likelihood` is: for a Gaussian model (``module.is_gaussian``) through its covariance
    (:func:`~skvae._likelihood.gaussian_conditional_mean`, which is cheaper
    on wide data), for a Gaussian mixture as the decoder mean at the exact
    posterior mean (:func:`_linear_posterior_mean`), since the noise of the
    missing entries is independent of the observed ones; otherwise
    estimated by self-normalised importance sampling over ``draws``
    (``module.conditional_mean``).
    """
    if module.is_gaussian:
        components = _kept_components()

        def gaussian(module, x, mask):
            x, mask = _in_float64(x, mask)
            ((mean, covariance, factors),) = components(module, x)
            return gaussian_conditional_mean(x, mean, covariance, mask, factors)

        return gaussian, module.n_features
    if module.has_linear_decoder:
        posterior_mean = _linear_posterior_mean()

        def linear(module, x, mask):
            z = posterior_mean(module, x, mask)
            weight, bias = (t.to(z) for t in module.linear_decoder())
            return z @ weight.T + bias

        return linear, _linear_mixture_width(module)

    def sampled(module, x, mask):
        return module.conditional_mean(x, draws, mask)

    return sampled, draws.shape[0] * module.widest_layer


def conditional_draw_fn(module, draws):
    """``(fn, width)`` for :func:`map_rows` with extras ``(uniform, noise)``: p(x | x_o).

    A draw for each row's missing entries, in internal units. Exact for a
    Gaussian model (``module.is_gaussian``), in float64 as
    :func:`log_likelihood` is: the conditional Gaussian, drawn with ``noise``
    (:func:`~skvae._likelihood.gaussian_conditional_mean`); otherwise by
    sampling importance resampling over ``draws``
    (``module.posterior_predictive``, which also takes ``uniform``), which
    is only as good as the encoder's proposal.
    """
    if module.is_gaussian:
        components = _kept_components()

        def gaussian(module, x, mask, uniform, noise):
            x, mask = _in_float64(x, mask)
            noise = noise.to(x)
            ((mean, covariance, factors),) = components(module, x)
            return gaussian_conditional_mean(
                x, mean, covariance, mask, factors, noise=noise
            )

        return gaussian, module.n_features

    def resampled(module, x, mask, uniform, noise):
        return module.posterior_predictive(x, draws, mask, uniform, noise)

    return resampled, draws.shape[0] * module.widest_layer


def _gaussian_scorer():
    """``fn`` for :func:`map_rows`: the exact log p(x_o) of a Gaussian model."""
    components = _kept_components()

    def fn(module, x, mask):
        x, mask = _in_float64(x, mask)
        ((mean, covariance, factors),) = components(module, x)
        return full_gaussian_log_prob(x, mean, covariance, mask, factors)

    return fn


def _in_float64(x, mask):
    """Rows (and mask) in float64 on the CPU, where the device has no float64.

    MPS: float32 would cancel most digits of a covariance or posterior with
    a small noise variance, and its Cholesky was missing before torch 2.7.
    The float32 weights are exact in float64.
    """
    if x.dtype == torch.float64:
        return x, mask
    return x.cpu().double(), None if mask is None else mask.cpu()


def _kept_components():
    """``components(module, x)``: a linear decoder's p(x), component by component.

    :func:`~skvae._likelihood.linear_mixture_data_components` (one for the
    N(0, I) prior: a Gaussian model's mean, covariance and factors),
    computed at the first chunk, in ``x``'s dtype and on its device, and
    kept for the others: ``K D^3`` of factorizations per chunk would
    dominate on wide data.
    """
    kept = []

    def components(module, x):
        if not kept:
            weight, bias, variance, _, means, cholesky = _linear_parameters(module, x)
            if module.prior_components == 1:
                means = cholesky = None
            kept.extend(
                linear_mixture_data_components(weight, bias, variance, means, cholesky)
            )
        return kept

    return components


def _linear_mixture_scorer():
    """``fn`` for :func:`map_rows`: the exact log p(x_o) of a linear decoder.

    In latent space (:func:`~skvae._likelihood.linear_mixture_log_prob`),
    with the factors for complete rows computed at the first chunk and kept
    for the others; a wide model's rows with missing entries go through
    p(x)'s components in data space (:func:`_by_completeness`).
    """
    factors = []
    components = _kept_components()

    def fn(module, x, mask):
        x, mask = _in_float64(x, mask)
        args = _linear_parameters(module, x)
        weight, _, variance, log_weights, _, cholesky = args
        if not factors:
            factors.append(linear_mixture_factors(weight, variance, cholesky))

        def latent(x, mask):
            return linear_mixture_log_prob(x, *args, mask, factors[0])

        def data(x, mask):
            return gaussian_mixture_log_prob(
                x, log_weights, components(module, x), mask
            )

        return _by_completeness(module, x, mask, latent, data)

    return fn
