"""Training: batching, optimiser, KL warm-up, early stopping, recovery.

:func:`fit_module` is the entry point: the estimator hands it the module,
the optimiser and the standardized training data as tensors, with its
settings, and gets back what it stores. The loop keeps the data on the
device and synchronises with it once per
epoch, never per step: per-step host round trips (``loss.item()``) would
stall a GPU and cost the overhead-bound CPU step dearly.
"""

import itertools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ._device import inference_dtype, make_generator
from ._model import SCORE_CHUNK_ELEMENTS

# Halvings of the learning rate tried when an epoch ends with a non-finite
# loss or parameters, before giving up.
MAX_RECOVERIES = 10
# Rows per chunk when evaluating without gradients; with a mixture prior,
# few enough that its log-density's (components, latent, rows) tensor holds
# at most SCORE_CHUNK_ELEMENTS values, the bound of scoring (an averaged
# prior has hundreds of components).
EVAL_CHUNK = 8192
# Rows copied to the device at a time when the training data stay on the host.
STREAM_CHUNK = 2**17
# A heteroscedastic decoder trains its mean under the closed-form variance for
# this many epochs (at most half of max_iter) before its variance head is
# switched on: variance networks fitted from the start tend to explain the
# data by inflating the variance instead of fitting the mean (Detlefsen et al.
# 2019; Seitzer et al. 2022).
HETEROSCEDASTIC_WARMUP = 20
# With early stopping, trained weights replace the ones training started from
# only if their validation ELBO is higher by this many standard errors of the
# mean per-row gain.
SIGNIFICANCE = 2.0
# learning_rate="adaptive": the times a plateau lowers the learning rate, by
# LEARNING_RATE_FACTOR each time, before the next plateau stops training.
LEARNING_RATE_DROPS = 2
LEARNING_RATE_FACTOR = 10.0
# The patience grows with the epochs run at one rate: a plateau is more than
# max(n_iter_no_change, PATIENCE_GROWTH * those epochs) epochs without an
# improvement, as the "patience increase" of the early stopping in the
# deeplearning.net (Theano) tutorials grows with the iterations run. A long
# run improves in small steps that its criterion's noise hides for a while.
PATIENCE_GROWTH = 0.2
# learning_rate="adaptive": when only this fraction of max_iter is left, the
# stage running then ends as at a plateau, so that a run still improving at
# its starting rate spends the rest at the lower rates: at a high rate the
# best weights are those of a lucky epoch among noisy ones, and a tenth of
# the rate settles them.
FINAL_FRACTION = 0.1
# After training, the stored decoder variance is the posterior mean squared
# residual over the training rows, from enough draws of z per row for about
# POSTERIOR_SAMPLES residuals per feature (1 to MAX_POSTERIOR_DRAWS per row).
POSTERIOR_SAMPLES = 2**16
MAX_POSTERIOR_DRAWS = 16


def auto_batch_size(n_samples):
    """Batch size for ``batch_size="auto"``: about n/32, a power of two in [32, 1024].

    Small data sets then still get some 30 optimiser steps per epoch, while
    large ones use batches big enough to keep the device busy.
    """
    size = 2 ** round(math.log2(max(n_samples, 1) / 32))
    return int(min(max(size, 32), 1024, n_samples))


@dataclass
class TrainingData:
    """Standardized training data on the device (or on the host, streamed).

    ``mask`` and ``val_mask`` are the observed entries of ``X`` and ``X_val``
    (None for complete data); ``X_val`` is the validation data of early
    stopping, None without it.
    """

    X: torch.Tensor
    mask: torch.Tensor | None = None
    X_val: torch.Tensor | None = None
    val_mask: torch.Tensor | None = None


@dataclass
class TrainingConfig:
    """What the loop needs from the estimator's parameters.

    ``n_epochs`` is the most this call runs (``max_iter`` for ``fit``, 1 for
    ``partial_fit``); ``seed`` seeds the epochs' batches and draws, and
    ``statistics_seed`` the draws of the final variance.
    ``learning_rate_init`` is the rate this call starts from (None: the
    optimiser's current one, as ``partial_fit`` goes on), and
    ``learning_rate_drops`` the plateaus that lower it before one stops
    training (0: the first plateau stops it). ``more_patience``, if given,
    is asked each time a run has gone ``n_iter_no_change + 1`` epochs
    without improvement while the growing patience (:func:`patience`)
    would let it go on: False ends that stage there, as a fixed patience
    would (a network candidate that the closed-form start clearly leads is
    not worth the extra epochs). When only ``final_epochs`` of ``n_epochs``
    are left, the stage running then ends as at a plateau (0: never).
    """

    n_epochs: int
    seed: int
    statistics_seed: int
    batch_size: int
    max_iter: int
    beta: float
    kl_warmup: int
    early_stopping: bool
    n_iter_no_change: int
    tol: float
    verbose: int
    learning_rate_init: float | None = None
    learning_rate_drops: int = 0
    more_patience: Callable[[], bool] | None = None
    final_epochs: int = 0


@dataclass
class FitResult:
    """What a call of :func:`fit_module` hands back to the estimator."""

    converged: bool
    kl_per_component: np.ndarray
    observed_fraction: np.ndarray | None
    validation_observed_fraction: np.ndarray | None


@dataclass
class TrainingHistory:
    """State carried across ``fit``/``partial_fit`` calls (internal units)."""

    n_iter: int = 0
    loss_curve: list = field(default_factory=list)
    validation_scores: list = field(default_factory=list)
    best_loss: float = math.inf
    best_validation_score: float = -math.inf
    no_improvement_count: int = 0
    best_state: tuple = None  # module_snapshot of the best weights
    # Whether early stopping kept the weights the last fit started from.
    kept_start: bool = False

    def restart(self):
        """Start the stopping rule afresh; the epochs and curves run on."""
        self.best_loss = math.inf
        self.best_validation_score = -math.inf
        self.no_improvement_count = 0
        self.best_state = None


def make_optimizer(module, learning_rate, weight_decay):
    """Adam, fused where the device supports it, with L2 on weights only.

    ``weight_decay`` is the gradient of ``alpha / (2 n) * ||W||^2``: a Gaussian
    prior on the weights added to the summed negative ELBO.
    """
    weights = [p for name, p in module.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in module.named_parameters() if not name.endswith("weight")]
    if weight_decay:
        groups = [
            {"params": weights, "weight_decay": weight_decay},
            {"params": biases, "weight_decay": 0.0},
        ]
    else:  # one group: each costs a kernel launch and Python per step
        groups = [{"params": weights + biases, "weight_decay": 0.0}]
    try:
        return torch.optim.Adam(groups, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(groups, lr=learning_rate)


def with_weight_decay(optimizer, module, weight_decay):
    """``optimizer`` with its weights' ``weight_decay`` set, Adam's state kept.

    The penalty is per row of the loss it is added to, so it is set for each
    call's training rows; a new optimizer (with the same moments, step and
    learning rate) replaces one whose groups cannot hold it.
    """
    groups = optimizer.param_groups
    if len(groups) == 2 and weight_decay:
        groups[0]["weight_decay"] = weight_decay
        return optimizer
    if len(groups) == 1 and not weight_decay:
        return optimizer
    return rebuilt_optimizer(optimizer, module, weight_decay)


def rebuilt_optimizer(optimizer, module, weight_decay):
    """A new :func:`make_optimizer` for ``module``, with ``optimizer``'s state.

    The new one has the groups ``weight_decay`` asks for and the flags of
    the module's device now (fused where it has the kernels); it takes the
    old one's learning rate, moments and step. :func:`make_optimizer`
    orders the parameters the same whatever its groups, so the old state's
    indices name the same parameters, and loading it casts the moments to
    the parameters' device and the step as fused or plain Adam wants it.
    """
    new = make_optimizer(module, optimizer.param_groups[0]["lr"], weight_decay)
    state = new.state_dict()
    state["state"] = optimizer.state_dict()["state"]
    new.load_state_dict(state)
    # Plain Adam reads its step on the CPU; loading moves it only for fused
    # or capturable groups, so a step from a GPU stayed there (torch < 2.4,
    # which has no fused CPU Adam): a device sync every step.
    for group in new.param_groups:
        if not (group.get("fused") or group.get("capturable")):
            for parameter in group["params"]:
                step = new.state.get(parameter, {}).get("step")
                if torch.is_tensor(step):
                    new.state[parameter]["step"] = step.cpu()
    return new


def epoch_generator(seed, epoch, device):
    """A generator for one epoch: resumable across partial_fit and pickling."""
    (state,) = np.random.SeedSequence([seed, epoch]).generate_state(1)
    return make_generator(int(state), device)


def kl_weight(beta, kl_warmup, epoch):
    """beta, ramped linearly over the first ``kl_warmup`` epochs."""
    if kl_warmup and epoch < kl_warmup:
        return beta * (epoch + 1) / kl_warmup
    return beta


def run_epoch(
    module, optimizer, X, batch_size, beta, generator, mask=None, observed=None
):
    """One pass over ``X`` in random batches; returns device tensors.

    Returns the mean objective per row and the mean squared residual per
    feature (the closed-form variance over the epoch; over observed entries
    where ``mask`` is given, NaN for a feature with none). Batches are
    near-equal splits of a permutation, so no batch is a lone leftover row
    whose closed-form variance would be degenerate. For complete data the
    epoch's variance is the batch-size-weighted mean of the batches'
    closed-form variances, which the step computes anyway (the pooled mean
    squared residual, up to the clamp at min_variance): one operation per
    step instead of summing the squared residuals again. ``observed``, the
    observed entries per feature (``mask.sum(0)``), saves summing the mask
    again each epoch, which for data streamed from the host is a pass over
    all of it.
    """
    device = module.variance.device
    n_samples = X.shape[0]
    n_batches = max(1, math.ceil(n_samples / batch_size))
    order = torch.randperm(n_samples, generator=generator, device=device)
    dtype = X.dtype  # explicit: torch's default dtype may have been changed
    batches = order.tensor_split(n_batches)
    if X.device != device:
        # Streamed from the host, which gathers the rows: the order goes
        # there once, before any step is queued, not once per chunk (each
        # copy would wait for the steps queued before it).
        batches = order.cpu().tensor_split(n_batches)
    sizes = torch.tensor([len(index) for index in batches], device=device)
    losses = []
    batch_variances = mask is None and module.closed_form_variance
    # Sum of squared residuals per feature (of batch variances x batch sizes
    # for complete data), accumulated in place: a list of one small tensor
    # per step would fragment the heap (+50 MB peak at 10^6 rows on a CPU).
    squared_sum = torch.zeros(module.n_features, dtype=dtype, device=device)
    masks = (
        itertools.repeat(None)
        if mask is None
        else _device_batches(mask, batches, device)
    )
    # strict=False: without a mask, ``masks`` is an endless repeat of None.
    batches_on_device = _device_batches(X, batches, device)
    for x, batch_mask in zip(batches_on_device, masks, strict=False):
        eps = torch.randn(
            x.shape[0],
            module.n_components,
            generator=generator,
            dtype=dtype,
            device=device,
        )
        log_px, kl, squared, variance = module.training_terms(x, eps, batch_mask)
        kl_row = kl.sum(-1)
        loss = ((kl_row if beta == 1.0 else beta * kl_row) - log_px).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
        if batch_variances:
            squared_sum.add_(variance, alpha=x.shape[0])
        elif module.closed_form_variance:
            squared_sum += squared.sum(0)
    loss_sum = torch.stack(losses) @ sizes.to(dtype)
    if mask is not None and observed is None:
        observed = mask.sum(0)
    count = n_samples if mask is None else observed.to(device)
    return loss_sum / n_samples, squared_sum / count


def _device_batches(X, batches, device):
    """The rows of each batch, on ``device``.

    Data already on the device are indexed in place. Data left on the host
    (too large for the device) are gathered and copied over about
    ``STREAM_CHUNK`` rows at a time, through pinned memory and without
    blocking: one host round trip per chunk of batches, never one per step.
    Only the chunk is pinned, not the data (pinned blocks are rounded up to
    a power of two and cached until the process ends).
    """
    if X.device == device:
        for index in batches:
            yield X[index]
        return
    per_chunk = max(1, STREAM_CHUNK // len(batches[0]))
    for start in range(0, len(batches), per_chunk):
        group = batches[start : start + per_chunk]
        rows = X[torch.cat(group)].pin_memory()
        yield from rows.to(device, non_blocking=True).split([len(i) for i in group])


@torch.no_grad()
def set_epoch_variance(module, mean_squared, observed=None):
    """Store the epoch's closed-form variance (used for validation and scoring).

    A feature with no observed entry (NaN) keeps its variance: there is no
    data to update it. A shared variance pools the squared residuals of all
    observed entries, as :func:`~skvae._likelihood.optimal_variance` does in
    each step: with ``observed`` (the number of observed entries of each
    feature, for data with missing entries), each feature's mean weighs by
    its count.
    """
    if not module.closed_form_variance:
        return
    if module.variance_mode == "shared":
        if observed is None:
            pooled = mean_squared.nanmean()
        else:
            counts = observed.to(mean_squared)
            pooled = (mean_squared.nan_to_num() * counts).sum() / counts.sum()
        mean_squared = pooled.expand_as(mean_squared)
    variance = mean_squared.clamp(min=module.min_variance)
    module.variance.copy_(torch.where(variance.isnan(), module.variance, variance))


@torch.no_grad()
def validation_elbo(module, X_val, eps, mask=None):
    """Single-draw ELBO of each validation row, with fixed draws (float64, CPU)."""
    chunk = EVAL_CHUNK
    if module.prior_width:
        chunk = max(1, min(EVAL_CHUNK, SCORE_CHUNK_ELEMENTS // module.prior_width))
    out = []
    for start in range(0, X_val.shape[0], chunk):
        rows = slice(start, start + chunk)
        x = X_val[rows].to(eps.device)
        observed = None if mask is None else mask[rows].to(eps.device)
        log_px, kl, _, _ = module.training_terms(x, eps[rows], observed, False)
        out.append((log_px - kl.sum(-1)).cpu().double())
    return torch.cat(out)


@torch.no_grad()
def posterior_statistics(module, X, seed, n_draws, mask=None):
    """Closed-form decoder variance and mean KL per latent dimension over ``X``.

    The variance is E_q[(x - mu(z))^2] averaged over rows (over observed
    entries where ``mask`` is given), estimated with ``n_draws`` draws of z
    per row from a generator seeded by ``seed``, so the stored value (and
    hence every later score) is deterministic. With ``n_draws=0``, the KL
    only (the variance is None).
    """
    device = module.variance.device
    generator = make_generator(seed, device)
    # Sums in float64, except on MPS, which has no float64.
    total = inference_dtype(device)
    squared_sum = torch.zeros(module.n_features, dtype=total, device=device)
    kl_sum = torch.zeros(module.n_components, dtype=total, device=device)
    for start in range(0, X.shape[0], EVAL_CHUNK):
        x = X[start : start + EVAL_CHUNK].to(device)
        observed = None
        if mask is not None:
            observed = mask[start : start + EVAL_CHUNK].to(device)
        mean, std = module.encode(x, observed)
        kl_sum += module.kl_per_dimension(mean, std).sum(0, dtype=total)
        for _ in range(n_draws):
            eps = torch.randn(
                mean.shape, generator=generator, dtype=mean.dtype, device=device
            )
            x_mean, _ = module.decode(mean + std * eps)
            squared = (x - x_mean) ** 2
            if observed is not None:
                squared = torch.where(observed, squared, 0.0)
            squared_sum += squared.sum(0, dtype=total)
    n_samples = X.shape[0]
    if n_draws == 0:  # the KL only
        return None, kl_sum / n_samples
    count = n_samples if mask is None else mask.sum(0, dtype=total).to(device)
    return (squared_sum / (count * n_draws)).float(), kl_sum / n_samples


def posterior_draws(n_rows):
    """Draws of z per row for :func:`posterior_statistics` over ``n_rows`` rows."""
    return int(np.clip(math.ceil(POSTERIOR_SAMPLES / n_rows), 1, MAX_POSTERIOR_DRAWS))


def _observed_counts(mask):
    """Observed entries per feature (None for complete data)."""
    return None if mask is None else mask.sum(0)


def _observed_fraction(mask):
    """Fraction of rows in which each feature is observed; None without a mask."""
    if mask is None:
        return None
    return _observed_counts(mask).cpu().numpy() / mask.shape[0]


def fit_module(module, optimizer, data, config, history):
    """Train ``module`` on :class:`TrainingData` and fix its decoder variance.

    Runs :func:`train`, then sets the stored decoder variance to its
    closed-form value over the training rows, from draws seeded by
    ``config.statistics_seed``, so that every later score is deterministic
    (unless early stopping kept the starting weights, whose variance is
    kept too).

    Returns
    -------
    FitResult
        Whether the stopping rule fired, the mean KL per latent dimension
        over the training rows, and, for data with missing entries, the
        fraction of rows in which each feature is observed in ``data.X`` and
        ``data.X_val`` (None for complete data).
    """
    try:
        converged = train(module, optimizer, data, config, history)
    finally:  # also where training fails: the snapshot holds device memory
        history.best_state = None
    mean_squared, kl = posterior_statistics(
        module,
        data.X,
        config.statistics_seed,
        posterior_draws(data.X.shape[0]),
        data.mask,
    )
    if not history.kept_start:  # a start keeps its own, closed-form variance
        set_epoch_variance(module, mean_squared, _observed_counts(data.mask))
    return FitResult(
        converged=converged,
        kl_per_component=kl.cpu().double().numpy(),
        observed_fraction=_observed_fraction(data.mask),
        validation_observed_fraction=_observed_fraction(data.val_mask),
    )


def clone_state(state):
    """A copy of a (nested) state dict: 10x faster than ``copy.deepcopy``."""
    if isinstance(state, torch.Tensor):
        return state.clone()
    if isinstance(state, dict):
        return {key: clone_state(value) for key, value in state.items()}
    if isinstance(state, list):
        return [clone_state(value) for value in state]
    return state


def module_snapshot(module):
    """A copy of the module's weights and of its variance head's switch.

    ``state_dict`` leaves the switch out (it is a flag, not a weight): weights
    saved before a heteroscedastic head switched on must be restored with it
    off, or they are scored with a head that was never trained.
    """
    return clone_state(module.state_dict()), module.variance_head_active


def restore_snapshot(module, snapshot):
    """Set the module's weights and variance head as :func:`module_snapshot` saved them."""
    state, head_active = snapshot
    module.load_state_dict(state)
    module.variance_head_active = head_active


def _snapshot(module, optimizer):
    return clone_state(module.state_dict()), clone_state(optimizer.state_dict())


def _all_finite(loss, module):
    flags = [torch.isfinite(loss).all()]
    flags += [torch.isfinite(p).all() for p in module.parameters()]
    return bool(torch.stack(flags).all())


def train(module, optimizer, data, config, history):
    """Run up to ``config.n_epochs`` epochs on :class:`TrainingData`.

    Updates ``history`` in place.

    Stops early when the training loss (or, with early stopping, the
    validation ELBO) has not improved by ``tol`` for more than
    ``n_iter_no_change`` epochs, as ``MLPRegressor`` does, or for more than
    a fifth of the epochs run at the current rate if that is longer
    (:func:`patience`); the stage running when only
    ``config.final_epochs`` are left ends there as at a plateau. The first
    ``config.learning_rate_drops`` such plateaus do not stop training but
    lower the learning rate (:func:`lower_learning_rate`), unless the stage
    that just ended (at one rate) has not clearly beaten the weights it
    started from (:func:`_worth_lower_rates`). With early
    stopping the weights with the best validation ELBO are restored, the
    starting weights included; trained weights that beat the starting ones
    by less than ``SIGNIFICANCE`` standard errors of the per-row gain are
    not kept (:func:`_significant`).

    Returns
    -------
    converged : bool
        Whether the stopping rule fired before ``n_epochs`` ran out.
    """
    device = module.variance.device
    X, mask, X_val, val_mask = data.X, data.mask, data.X_val, data.val_mask
    observed = _observed_counts(mask)  # once, not per epoch
    seed = config.seed
    val_eps = None
    if X_val is not None:
        val_eps = torch.randn(
            X_val.shape[0],
            module.n_components,
            generator=make_generator(seed, device),
            dtype=X_val.dtype,
            device=device,
        )
    if config.learning_rate_init is not None:
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate_init
    drops_left = config.learning_rate_drops
    warmup_end = max(config.kl_warmup, _heteroscedastic_warmup(module, config))
    # The patience grows with the epochs at the current rate that count:
    # from the end of any warm-up, as the stopping rule counts.
    stage_epoch = max(history.n_iter, warmup_end)
    final_start = history.n_iter + config.n_epochs - config.final_epochs
    converged = True
    initial = initial_state = best_rows = stage_start = None
    if X_val is not None:
        # The weights training starts from compete too: a fit started at a
        # closed-form solution keeps it unless training does better.
        rows = validation_elbo(module, X_val, val_eps, val_mask)
        initial = best_rows = stage_start = rows
        if rows.mean().item() > history.best_validation_score:
            history.best_validation_score = rows.mean().item()
            history.best_state = initial_state = module_snapshot(module)
    for _ in range(config.n_epochs):
        epoch = history.n_iter
        if (
            module.variance_mode == "heteroscedastic"
            and not module.variance_head_active
        ):
            if epoch >= _heteroscedastic_warmup(module, config):
                module.activate_variance_head()
        beta = kl_weight(config.beta, config.kl_warmup, epoch)
        tic = time.perf_counter()
        loss, mean_squared = _run_recovering(
            module,
            optimizer,
            X,
            config,
            beta,
            epoch_generator(seed, epoch, device),
            epoch,
            mask,
            observed,
        )
        set_epoch_variance(module, mean_squared, observed)
        history.n_iter += 1
        history.loss_curve.append(loss)
        message = f"Epoch {history.n_iter}, loss = {loss:.6f}"
        counting = epoch + 1 >= warmup_end
        if X_val is not None:
            rows = validation_elbo(module, X_val, val_eps, val_mask)
            score = rows.mean().item()
            history.validation_scores.append(score)
            message += f", validation ELBO = {score:.6f}"
            improved = score > history.best_validation_score + config.tol
            if score > history.best_validation_score or not counting:
                history.best_validation_score = score
                history.best_state = module_snapshot(module)
                best_rows = rows
        else:
            improved = loss < history.best_loss - config.tol
            # During a warm-up the objective itself changes (the KL weight
            # grows, the variance head switches on): the stopping rule starts
            # from the loss at its end, not from an easier objective's minimum.
            history.best_loss = min(history.best_loss, loss) if counting else loss
        history.no_improvement_count = (
            0 if improved or not counting else (history.no_improvement_count + 1)
        )
        if config.verbose:
            print(f"{message} ({time.perf_counter() - tic:.2f} s)")
        limit = patience(config.n_iter_no_change, max(history.n_iter - stage_epoch, 0))
        if (
            limit > config.n_iter_no_change
            and history.no_improvement_count == config.n_iter_no_change + 1
            and config.more_patience is not None
            and not config.more_patience()
        ):
            limit = config.n_iter_no_change
        final = config.final_epochs > 0 and stage_epoch < final_start <= history.n_iter
        plateau = final or history.no_improvement_count > limit
        if plateau and drops_left and _worth_lower_rates(X_val, best_rows, stage_start):
            drops_left -= 1
            stage_start = best_rows
            stage_epoch = history.n_iter
            lower_learning_rate(module, optimizer, history, config.verbose)
            continue
        if plateau:
            if config.verbose and final:
                print(f"{config.final_epochs} epochs left. Stopping this stage.")
            elif config.verbose:
                print(
                    f"No improvement of at least tol={config.tol} for "
                    f"{limit} consecutive epochs. Stopping."
                )
            break
    else:
        converged = False
    history.kept_start = False
    if X_val is not None:
        if initial_state is not None and not _significant(best_rows - initial):
            history.best_state = initial_state
            history.kept_start = True
        if history.best_state is not None:
            restore_snapshot(module, history.best_state)
    return converged


def patience(n_iter_no_change, epochs_at_rate):
    """Epochs without improvement a run may go before its plateau.

    ``n_iter_no_change``, or a ``PATIENCE_GROWTH`` fraction of the epochs run
    at the current rate in this call if that is more: the criterion of a
    long run still rising by a little per epoch is noisier than its rise, so
    a fixed patience would end it while it still improves. A run that ends
    early (a kept start, most of all) stops as with a fixed patience.
    """
    return max(n_iter_no_change, int(PATIENCE_GROWTH * epochs_at_rate))


def _worth_lower_rates(X_val, best_rows, stage_start):
    """Whether a plateau should lower the rate rather than stop training.

    Without early stopping, always. With it, only if the best weights so far
    beat those the stage started from (the starting weights, or the best
    ones at the last plateau) by more than ``SIGNIFICANCE`` standard errors
    of the per-row gain: a plateau that training has not clearly raised
    above its start (a closed-form start, most often) stops as it would at
    a constant rate, and a stage at a lower rate that gained nothing clear
    is not followed by one at a lower rate still.
    """
    return X_val is None or _significant(best_rows - stage_start)


def lower_learning_rate(module, optimizer, history, verbose):
    """Go on from the best weights so far at a lower learning rate.

    With early stopping the best weights by validation ELBO are restored
    (Adam's moment estimates are kept); without it training goes on from
    the current ones. The plateau count starts afresh.
    """
    if history.best_state is not None:
        restore_snapshot(module, history.best_state)
    for group in optimizer.param_groups:
        group["lr"] /= LEARNING_RATE_FACTOR
    history.no_improvement_count = 0
    if verbose:
        print(
            f"No improvement for more than the patience: learning rate set to "
            f"{optimizer.param_groups[0]['lr']:.3g}."
        )


def _significant(gain):
    """Whether a mean gain over validation rows is clearly more than noise.

    A paired comparison: the mean per-row gain must exceed
    ``SIGNIFICANCE`` standard errors. On a few dozen validation rows the best
    of many epochs is otherwise often better by chance alone.
    """
    if gain.numel() < 2:
        return bool(gain.sum() > 0)
    spread = gain.std().item() / math.sqrt(gain.numel())
    return gain.mean().item() > SIGNIFICANCE * spread


def _heteroscedastic_warmup(module, config):
    if module.variance_mode != "heteroscedastic":
        return 0
    return min(HETEROSCEDASTIC_WARMUP, config.max_iter // 2)


def _run_recovering(
    module, optimizer, X, config, beta, generator, epoch, mask, observed=None
):
    """Run an epoch; on a non-finite result, roll back and halve the rate."""
    saved_generator = generator.get_state()
    for attempt in range(MAX_RECOVERIES + 1):
        module_state, optimizer_state = _snapshot(module, optimizer)
        loss, mean_squared = run_epoch(
            module, optimizer, X, config.batch_size, beta, generator, mask, observed
        )
        if _all_finite(loss, module):
            return loss.item(), mean_squared
        module.load_state_dict(module_state)
        optimizer.load_state_dict(optimizer_state)
        generator.set_state(saved_generator)
        for group in optimizer.param_groups:
            group["lr"] *= 0.5
        if attempt < MAX_RECOVERIES:
            warnings.warn(
                f"The loss became non-finite in epoch {epoch + 1}; the epoch was "
                f"rerun with learning rate {optimizer.param_groups[0]['lr']:.3g}.",
                RuntimeWarning,
                stacklevel=4,
            )
    raise ValueError(
        f"Training diverged: the loss stayed non-finite in epoch {epoch + 1} even "
        f"after lowering the learning rate {MAX_RECOVERIES} times. Lower "
        f"learning_rate_init or beta (beta={config.beta:g}), raise min_variance, "
        "keep standardize on, or check X for extreme values: with partial_fit, "
        "for a chunk far outside the range of the first, whose statistics "
        "standardize every chunk."
    )
