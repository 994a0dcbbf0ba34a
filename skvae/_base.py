"""The base class of the estimators: parameters, fitting, scoring, pickling.

Numpy in, numpy out. The base class validates data and parameters, hands the
training module standardized tensors and stores what comes back; the units
are in ``_units.py``, the numpy-to-device machinery in ``_inference.py``, the
training loop in ``_training.py``.
"""

import dataclasses
import math
import warnings
from abc import ABCMeta, abstractmethod
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._device import draw_seed, inference_dtype, resolve_device, seeded_cpu_rng
from ._incomplete import em_iterations, filled_rows
from ._inference import importance_draws, log_likelihood, map_rows, to_tensor
from ._linear_start import (
    AVERAGED_MIXTURES,
    START_NOISE_FLOOR,
    START_ROWS,
    clearly_better,
    larger_prior,
    mixture_prior,
    probabilistic_pca,
    start_log_likelihood,
)
from ._model import ACTIVATIONS, LOG_VARIANCE_BOUNDS, VAEModule
from ._training import (
    FINAL_FRACTION,
    LEARNING_RATE_DROPS,
    FitResult,
    TrainingConfig,
    TrainingData,
    TrainingHistory,
    auto_batch_size,
    fit_module,
    lower_learning_rate,
    make_optimizer,
    module_snapshot,
    posterior_statistics,
    rebuilt_optimizer,
    restore_snapshot,
    with_weight_decay,
)
from ._units import (
    check_observed_features,
    check_unstandardized_range,
    count_observed,
    feature_moments,
    fit_marginal_knots,
    gaussianize,
    log_jacobian,
    log_jacobian_rows,
    unstandardize,
    variance_in_units,
)

# Latent dimensions of init="auto"'s randomly started network when
# n_components is None (GaussianVAE's default before the linear start).
RANDOM_START_COMPONENTS = 2
# Validation rows that early_stopping="auto" needs to hold out rows at all.
MIN_AUTO_VALIDATION_ROWS = 2
# Held-out rows needed to choose between the standardized and the
# Gaussianized features (standardize="auto"; with fewer, standardized), or
# to choose a larger mixture prior than BIC's (with fewer, BIC's).
MIN_CHOICE_ROWS = 10
# With standardize=False, a feature whose variance is under this many times
# min_variance warns: the floor is then over 1 % of its variance.
FLOOR_FRACTION_WARNED = 100.0
# Seed of EM's subset of rows and of the draws that complete incomplete rows
# for the closed-form start: fixed, so that the start (the fit itself, for a
# closed-form model such as VAEImputer's default) does not vary from fit to
# fit with random_state=None, as a closed form should not.
START_FILL_SEED = 0
# The largest variance the network's float32 parameters hold.
FLOAT32_MAX = float(np.finfo(np.float32).max)


class BaseGaussianVAE(BaseEstimator, metaclass=ABCMeta):
    """Base class of the Gaussian VAE estimators: fitting and scoring.

    Abstract, as scikit-learn's ``BaseMixture`` and
    ``BaseMultilayerPerceptron`` are: its ``__init__`` takes every parameter,
    without defaults. Each public estimator declares its own signature, with
    its defaults, beside the docstring that documents it in full
    (:class:`skvae.GaussianVAE`, :class:`skvae.VAEOutlierDetector`,
    :class:`skvae.VAEImputer`); ``tests/test_docstrings.py`` keeps the shared
    parameter docs identical.
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "prior_components": [
            Interval(Integral, 1, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "init": [StrOptions({"auto", "linear", "random"})],
        "shrinkage": [Interval(Real, 0, 1, closed="both"), StrOptions({"auto"})],
        # Variances are float32 in the network; Sobol' draws number at most
        # 2**30 (torch's SobolEngine.MAXBIT).
        "decoder_variance": [
            StrOptions({"feature", "shared", "heteroscedastic"}),
            Interval(Real, 0, FLOAT32_MAX, closed="right"),
        ],
        "min_variance": [Interval(Real, 0, FLOAT32_MAX, closed="right")],
        "beta": [Interval(Real, 0, None, closed="left")],
        "kl_warmup": [Interval(Integral, 0, None, closed="left")],
        "standardize": ["boolean", StrOptions({"marginal", "auto"})],
        "batch_size": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"adaptive", "constant"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean", StrOptions({"auto"})],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "n_importance_samples": [Interval(Integral, 1, 2**30, closed="both")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }

    @abstractmethod
    def __init__(
        self,
        *,
        n_components,
        prior_components,
        hidden_layer_sizes,
        activation,
        init,
        shrinkage,
        decoder_variance,
        min_variance,
        beta,
        kl_warmup,
        standardize,
        batch_size,
        max_iter,
        learning_rate,
        learning_rate_init,
        alpha,
        early_stopping,
        validation_fraction,
        n_iter_no_change,
        tol,
        n_importance_samples,
        device,
        random_state,
        verbose,
        warm_start,
    ):
        self.n_components = n_components
        self.prior_components = prior_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.init = init
        self.shrinkage = shrinkage
        self.decoder_variance = decoder_variance
        self.min_variance = min_variance
        self.beta = beta
        self.kl_warmup = kl_warmup
        self.standardize = standardize
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.n_importance_samples = n_importance_samples
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # ------------------------------------------------------------------ fitting

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the model to X by maximising the ELBO.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data, in any units; NaN marks a missing entry.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            Fitted estimator.

        Examples
        --------
        >>> import numpy as np
        >>> from skvae import GaussianVAE
        >>> X = np.random.default_rng(0).normal(size=(100, 3)) * [1.0, 10.0, 1e3]
        >>> vae = GaussianVAE(max_iter=5, random_state=0).fit(X)
        >>> vae.n_iter_, vae.noise_variance_.shape
        (5, (3,))
        """
        if not self._fit(X, incremental=False):
            self._warn_not_converged()
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Run one epoch over X, initialising the model on the first call.

        A model whose fit has a closed form (see ``init``) is fitted on the
        first chunk as :meth:`fit` would fit it, with no epoch; later
        chunks train it by one epoch each. The standardization statistics
        (``mean_``, ``scale_``) are computed on the first call and kept fixed
        afterwards, so that the network always sees data in the same units:
        make the first chunk representative (a warning names the features it
        leaves constant, whose scale is then a guess from their magnitude).
        The decoder variance is re-estimated on each chunk after its pass. No
        validation set is held out.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            A chunk of training data; NaN marks a missing entry.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : object
            The updated estimator.

        Examples
        --------
        >>> import numpy as np
        >>> from skvae import GaussianVAE
        >>> X = np.random.default_rng(0).normal(size=(200, 3))
        >>> vae = GaussianVAE(random_state=0)
        >>> for chunk in np.array_split(X, 4):
        ...     vae = vae.partial_fit(chunk)
        >>> vae.n_iter_
        4
        """
        self._fit(X, incremental=True)
        return self

    def _warn_not_converged(self):
        """The warning of an ``fit`` whose last training ran out of epochs."""
        warnings.warn(
            f"Stochastic optimiser: maximum iterations ({self.max_iter}) reached "
            "and the optimisation hasn't converged yet.",
            ConvergenceWarning,
            # The caller of fit, past fit itself and _fit_context.
            stacklevel=4,
        )

    # Training needs autograd whatever the caller's mode; both modes are
    # thread-local, so this changes nothing outside the call.
    @torch.inference_mode(False)
    @torch.enable_grad()
    def _fit(self, X, incremental):
        """Validate X, initialize the model if needed, then train.

        A call that starts a new model and raises (a check of X against
        the parameters, a device that is not there) leaves the estimator as
        it was: its new statistics beside the last fit's network would score
        every row wrongly, and a failed first fit would look fitted.

        Returns
        -------
        converged : bool
            Whether training stopped before ``max_iter`` (always True for
            ``partial_fit``, which runs one epoch by design).
        """
        self._check_hidden_layer_sizes()
        reset = not hasattr(self, "module_") or (
            not incremental and not self.warm_start
        )
        # A new fit sets each attribute to a new object and leaves the old
        # ones as they were: putting them back restores the estimator.
        before = dict(self.__dict__) if reset else None
        try:
            X = validate_data(
                self,
                X,
                reset=reset,
                dtype=[np.float64, np.float32],
                ensure_all_finite="allow-nan",
            )
            X = self._mark_missing(X)
            if not self.standardize:
                check_unstandardized_range(X)
            if reset:
                observed = count_observed(X)
                check_observed_features(observed)
                self._initialize(
                    X,
                    has_missing=bool((observed < X.shape[0]).any()),
                    first_chunk=incremental,
                )
            else:
                self._check_fitted_network()
                if not hasattr(self, "_optimizer"):  # dropped when pickled
                    self._optimizer = self._make_optimizer(X.shape[0])
                self._follow_device()
                self._follow_variance_parameters()
            return self._fit_validated(X, incremental)
        except BaseException:  # an interrupted new fit too
            if before is not None:
                self.__dict__.clear()
                self.__dict__.update(before)
            raise

    def _check_fitted_network(self):
        """Raise if a parameter that shapes the network changed since the fit.

        ``warm_start`` and :meth:`partial_fit` continue training the fitted
        module, which cannot take a new shape; silently training the old one
        would ignore the new value.
        """
        module = self.module_
        mode = self.decoder_variance
        fitted = {
            "hidden_layer_sizes": (
                self._hidden_layer_sizes(),
                module.hidden_layer_sizes,
            ),
            "activation": (self.activation, module.activation),
            "decoder_variance": (
                mode if isinstance(mode, str) else "fixed",
                module.variance_mode,
            ),
        }
        n_components = self.n_components
        if n_components is None and self.init != "auto":
            # One per feature; init="auto" may have kept a narrower network.
            n_components = self.n_features_in_
        if n_components is not None:
            fitted["n_components"] = (n_components, module.n_components)
        if self.prior_components != "auto":
            fitted["prior_components"] = (
                self.prior_components,
                module.prior_components,
            )
        # The features' map fitted: "auto" accepts either of its two.
        unscaled = getattr(self, "_unscaled", None)
        if unscaled is None:  # fitted before it was stored: mean_ 0, scale_ 1
            unscaled = not np.any(self.mean_) and bool(np.all(self.scale_ == 1))
        then = (
            "marginal"
            if getattr(self, "marginal_knots_", None) is not None
            else not unscaled
        )
        now = self.standardize
        if isinstance(now, str) and now == "auto" and then is not False:
            now = then
        fitted["standardize"] = (now, then)
        for name, (now, then) in fitted.items():
            if now != then:
                if name == "decoder_variance":  # as given, not as a kind
                    now = mode
                    then = "a fixed variance" if then == "fixed" else repr(then)
                else:
                    then = repr(then)
                raise ValueError(
                    f"{name}={now!r} differs from the fitted network's {then}: "
                    "warm_start and partial_fit continue training the fitted "
                    "network, whose shape cannot change. Call fit with "
                    "warm_start=False, or use a new estimator, to fit the new one."
                )

    def _follow_variance_parameters(self):
        """Train on with ``min_variance`` and a fixed ``decoder_variance`` as set now.

        Both are values in the fitted network, not its shape: ``warm_start``
        and :meth:`partial_fit` take them as they are now, as they take a
        changed ``alpha`` or ``learning_rate_init``, where they kept the
        values of the first fit whatever ``set_params`` said. A
        heteroscedastic decoder's ``min_variance`` is the offset of its
        head's variances, not a floor: a new value raises.
        """
        module = self.module_
        if (
            module.variance_mode == "heteroscedastic"
            and float(self.min_variance) != module.min_variance
        ):
            # min_variance + exp(head): a new value would shift every fitted
            # variance by the change, not floor them.
            raise ValueError(
                f"min_variance={self.min_variance!r} differs from the fitted "
                f"network's {module.min_variance!r}: a heteroscedastic decoder's "
                "variances are min_variance plus its head's output, so a new "
                "value would shift them all. Call fit with warm_start=False, or "
                "use a new estimator, to fit with the new one."
            )
        module.min_variance = float(self.min_variance)
        with torch.no_grad():
            if module.variance_mode == "fixed":
                fixed = max(float(self.decoder_variance), module.min_variance)
                module.variance.fill_(fixed)
            else:
                module.variance.clamp_(min=module.min_variance)

    def _follow_device(self):
        """Move a fitted model, and Adam's state, to ``device`` if it changed.

        ``warm_start`` and :meth:`partial_fit` then train on the device asked
        for. Where it is not available, training goes on where the model is
        with a warning, as a model loaded on such a machine is placed on the
        CPU (:meth:`_place_loaded_module`).
        """
        try:
            device = resolve_device(self.device)
        except ValueError as exc:
            warnings.warn(
                f"{exc} Training goes on on {self.device_}, where the model is.",
                UserWarning,
                # The caller of fit, past this method, _fit and its two torch
                # mode decorators, fit and _fit_context.
                stacklevel=7,
            )
            return
        if device == self.device_:
            return
        self.module_.to(device)
        self.device_ = device
        groups = self._optimizer.param_groups
        self._optimizer = rebuilt_optimizer(
            self._optimizer,
            self.module_,
            groups[0]["weight_decay"] if len(groups) == 2 else 0.0,
        )

    def _fit_validated(self, X, incremental):
        """Train on validated X; the one extension point of fitting.

        A subclass that does more in ``fit`` (choose rows, set a threshold,
        fit a helper) overrides this and calls :meth:`_train_on` or
        ``super()._fit_validated``. Returns whether training converged.
        """
        return self._train_on(X, incremental)

    def _train_on(self, X, incremental):
        """Train the initialized model on validated X; True if converged.

        A ``fit`` (``incremental=False``) runs the stopping rule afresh, also
        when it continues from fitted weights (``warm_start``, or the support
        steps of :class:`VAEOutlierDetector`): its data may differ from the
        last call's, so the best loss of that call is no reference.
        """
        n_samples = X.shape[0]
        # The epochs (and validation scores) of earlier calls, kept in the
        # units of their own rows by _store_fit.
        history, earlier = self._history, self._curve_lengths()
        # The start :meth:`_choose_start` left for a kept start, used (and
        # dropped, with its codes and mixtures) by this call only.
        to_refit = getattr(self, "_start_to_refit", None)
        self._start_to_refit = None
        first_chunk = getattr(self, "_first_chunk", False)
        self._first_chunk = False
        if not incremental:
            self._history.restart()
        if not incremental or first_chunk:
            # An epoch on the rows the closed form was fitted to could only
            # move the model away from their fit; later chunks train it.
            if self._fits_in_closed_form() and self._em_fits_budget(X):
                return self._fit_closed_form(X)
        early_stopping = not incremental and self._uses_early_stopping(n_samples)
        order, n_train = np.arange(n_samples), n_samples
        if early_stopping:
            train_idx, val_idx = train_test_split(
                order, test_size=self.validation_fraction, random_state=self._split_seed
            )
            order, n_train = np.concatenate([train_idx, val_idx]), len(train_idx)
        tensor, mask = self._training_tensor(X, order)
        validation = slice(n_train, None) if early_stopping else None
        adaptive = self.learning_rate == "adaptive" and not incremental
        config = TrainingConfig(
            n_epochs=1 if incremental else self.max_iter,
            seed=self._train_seed,
            statistics_seed=self._score_seed,
            batch_size=self._batch_size(n_train),
            max_iter=self.max_iter,
            beta=float(self.beta),
            kl_warmup=self.kl_warmup,
            learning_rate_init=None if incremental else self.learning_rate_init,
            learning_rate_drops=LEARNING_RATE_DROPS if adaptive else 0,
            early_stopping=early_stopping,
            n_iter_no_change=self.n_iter_no_change,
            tol=self.tol,
            verbose=self.verbose,
            final_epochs=int(FINAL_FRACTION * self.max_iter) if adaptive else 0,
        )
        data = TrainingData(
            tensor[:n_train],
            mask=None if mask is None else mask[:n_train],
            X_val=None if validation is None else tensor[validation],
            val_mask=None if mask is None or validation is None else mask[validation],
        )
        # A linear start's encoder gives the posterior of complete rows: on
        # incomplete ones its ELBO falls short of its likelihood, and training
        # could win on the ELBO by mending the encoder while it worsens the
        # model. Such a start is weighed again after training, exactly.
        linear_start = None
        if (
            mask is not None
            and validation is not None
            and not incremental
            and self.init_ == "linear"
            and self.module_.has_linear_decoder
        ):
            linear_start = module_snapshot(self.module_)
        self._optimizer = with_weight_decay(
            self._optimizer, self.module_, self.alpha / n_train
        )
        result = fit_module(self.module_, self._optimizer, data, config, self._history)
        if linear_start is not None and not self._history.kept_start:
            self._keep_start_if_not_beaten(linear_start, X[order[n_train:]])
        if getattr(self, "_random_start_pending", False) and validation is not None:
            result = self._compare_random_start(
                X[order[n_train:]], data, config, result
            )
        self._random_start_pending = False
        if self._history.kept_start and self.init_ == "linear":
            # Training did not beat the closed-form start: the start again,
            # now on all rows, the held-out ones included, with the larger
            # mixture prior that the held-out rows prefer, if any (found
            # once, at the first fit, and kept for warm-started refits),
            # averaged over AVERAGED_MIXTURES restarts of EM, of that size
            # and the larger ones those rows cannot tell from the best.
            if to_refit is not None:
                self._prior_structure = larger_prior(*to_refit)
            result.kl_per_component = self._start_on_all_rows(
                X, tensor, mask, getattr(self, "_prior_structure", None)
            )
        if self.marginal_knots_ is None:
            log_det = log_jacobian(self.scale_, result.observed_fraction)
            val_log_det = log_jacobian(self.scale_, result.validation_observed_fraction)
        else:
            log_det, val_log_det = (
                float(np.mean(self._log_jacobian_rows(X[rows]))) if len(rows) else 0.0
                for rows in (order[:n_train], order[n_train:])
            )
        if self._history is not history:
            earlier = (0, 0)  # a randomly started network won: its own history
        self._store_fit(result, config.batch_size, log_det, val_log_det, earlier)
        return result.converged or incremental

    def _training_tensor(self, X, order=None):
        """X in internal units (rows in ``order``), float32, for training.

        Returns the tensor and its mask of observed entries (None for
        complete data); data too large for the device stay in host memory
        (:func:`to_tensor` with ``stream=True``).
        """
        return to_tensor(
            X,
            self.mean_,
            self.scale_,
            torch.float32,
            self.device_,
            order,
            stream=True,
            knots=self.marginal_knots_,
        )

    def _fits_in_closed_form(self):
        """Whether the model is a Gaussian whose fit has a closed form.

        A Gaussian module (``module_.is_gaussian``) with as many latent
        dimensions as features and a per-feature or shared variance can be
        any Gaussian with a full covariance matrix; with ``init="linear"``,
        its start (the mean and the covariance of the rows, shrunk as
        ``shrinkage`` says; where entries are missing, those of the
        maximum-likelihood Gaussian of the observed entries, found by EM) is
        the fit, and gradient steps could only add noise to it.
        """
        module = self.module_
        return (
            self.init == "linear"
            and module.is_gaussian
            and module.n_components == module.n_features
            and module.closed_form_variance
        )

    def _em_fits_budget(self, X):
        """Whether the start on all rows of X gets EM's Gaussian, where X is incomplete.

        Where EM would cost more than its budget
        (:func:`~skvae._incomplete.em_iterations`), the start is the Gaussian
        of the rows filled with the means, which is not the fit: the model
        then trains from it.
        """
        if not np.isnan(X).any():
            return True
        return em_iterations(np.isnan(X[self._rows_of_start_on_all(X)])) > 0

    def _rows_of_start_on_all(self, X):
        """The rows of X :meth:`_start_on_all_rows` computes the start on."""
        return _start_rows(
            np.arange(X.shape[0]), np.random.default_rng(self._init_seed)
        )

    def _fit_closed_form(self, X):
        """Set the model to its closed-form fit on every row of X; no epochs."""
        tensor, mask = self._training_tensor(X)
        kl = self._start_on_all_rows(X, tensor, mask)
        result = FitResult(True, kl, None, None)
        # No epoch ran: the curves are as they were.
        earlier = self._curve_lengths()
        self._store_fit(result, self._batch_size(X.shape[0]), 0.0, 0.0, earlier)
        return True

    def _curve_lengths(self):
        """Epochs and validation scores in the training history so far."""
        return len(self._history.loss_curve), len(self._history.validation_scores)

    def _store_fit(self, result, batch_size, log_det, val_log_det, earlier):
        """Set the fitted attributes, in the units of X, from a training result.

        ``log_det`` and ``val_log_det`` are the mean log-Jacobians of the map
        to internal units over the training and validation rows of this call.
        ``earlier`` counts the epochs (and validation scores) of the history
        that earlier calls ran: they keep the values those calls stored, in
        the units of their own rows, which a later chunk's Jacobian (other
        missing entries, other rows through a Gaussianizing map) would move.
        """
        history = self._history
        self.batch_size_ = batch_size
        self.kl_per_component_ = result.kl_per_component
        self.n_iter_ = history.n_iter
        self.loss_curve_ = _in_units(
            getattr(self, "loss_curve_", None),
            history.loss_curve,
            earlier[0],
            log_det,
        )
        if history.validation_scores:
            self.validation_scores_ = _in_units(
                getattr(self, "validation_scores_", None),
                history.validation_scores,
                earlier[1],
                -val_log_det,
            )
            self.best_validation_score_ = history.best_validation_score - val_log_det
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            # None after a closed-form fit: no epoch ran.
            self.best_loss_ = (
                history.best_loss + log_det if history.loss_curve else None
            )
        if self.module_.variance_mode == "heteroscedastic":
            self.noise_variance_ = None
        else:
            variance = self.module_.variance.cpu().double().numpy()
            self.noise_variance_ = variance_in_units(variance, self.scale_)

    def _hidden_layer_sizes(self):
        """``hidden_layer_sizes`` as a tuple: one int is one hidden layer."""
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, Integral) and not isinstance(sizes, (bool, np.bool_)):
            return (sizes,)
        return tuple(sizes)

    def _check_hidden_layer_sizes(self):
        try:
            sizes = self._hidden_layer_sizes()
        except TypeError:  # a 0-d array
            sizes = [None]
        if not all(
            isinstance(s, Integral) and not isinstance(s, (bool, np.bool_)) and s >= 1
            for s in sizes
        ):
            raise ValueError(
                "hidden_layer_sizes must be a positive integer or a sequence of them "
                f"(an empty one gives a linear VAE), got {self.hidden_layer_sizes!r}."
            )

    def _can_hold_out(self, n_samples):
        """Whether ``validation_fraction`` of the rows rounds to one or more
        and the split leaves some to train on.

        ``train_test_split`` holds out ``ceil(n_samples * validation_fraction)``
        rows and fails if none are left.
        """
        return round(n_samples * self.validation_fraction) >= 1 and (
            n_samples - math.ceil(n_samples * self.validation_fraction) >= 1
        )

    def _uses_early_stopping(self, n_samples):
        n_held_out = round(n_samples * self.validation_fraction)
        can_hold_out = self._can_hold_out(n_samples)
        if self.early_stopping == "auto":
            return n_held_out >= MIN_AUTO_VALIDATION_ROWS and can_hold_out
        if self.early_stopping and not can_hold_out:
            split = (
                f"n_samples={n_samples} with "
                f"validation_fraction={self.validation_fraction}"
            )
            if n_held_out < 1:
                problem = f"needs at least one validation row, but {split} gives none"
            else:
                problem = (
                    f"needs at least one training row, but {split} holds out "
                    f"{math.ceil(n_samples * self.validation_fraction)}"
                )
            raise ValueError(
                f"early_stopping=True {problem}. Pass more rows, change "
                "validation_fraction or set early_stopping=False."
            )
        return bool(self.early_stopping)

    def _batch_size(self, n_samples):
        if self.batch_size == "auto":
            return auto_batch_size(n_samples)
        return min(self.batch_size, n_samples)

    def _warn_if_first_chunk_fixes_no_scale(self, n_rows, constant):
        """Warn where the first ``partial_fit`` chunk leaves features constant.

        The chunk fixes ``mean_`` and ``scale_`` for good: a feature constant
        in it (one row makes every feature so) gets a scale guessed from its
        magnitude, and every later chunk is seen in those units.
        """
        constant = np.flatnonzero(constant)
        if constant.size:
            warnings.warn(
                f"The first partial_fit chunk ({n_rows} row(s)) fixes mean_ "
                "and scale_ for every later chunk, and feature(s) "
                f"{_listed(constant)} are constant in it: their scale is a "
                "guess from their magnitude. Make the first chunk "
                "representative of the data.",
                UserWarning,
                # The caller of partial_fit, past this method, _initialize,
                # _fit and its two torch mode decorators, partial_fit and
                # _fit_context.
                stacklevel=8,
            )

    def _warn_if_scales_defeat_the_bounds(self, spread, constant):
        """Warn where, with ``standardize=False``, X's units reach internal bounds.

        Three bounds are in internal units, which are those of X here: the
        linear start's noise variance, the same for every feature, is at
        least ``START_NOISE_FLOOR`` times the covariance's largest eigenvalue
        (so that the encoder can represent the narrowest posterior), every
        decoder variance is at least ``min_variance``, and the
        heteroscedastic head's variances are at most ``exp(20)``. A feature
        whose variance is below the first, near the second (under
        ``FLOOR_FRACTION_WARNED`` times it) or above the third is modelled
        badly: 8.4 nats/row lost on three features of scales 1e-3, 1 and 1e4;
        a detector missed the outlier (2, -2) of two features correlated at
        0.95 once their scale was 0.01, where its floor (1e-4) is their
        variance.
        ``spread`` and ``constant`` are those :func:`feature_moments` gives X.
        """
        variances = spread**2
        largest = float(variances.max())
        problems = []
        # A constant feature is left out: standardizing would not help it.
        narrow = np.flatnonzero(~constant & (variances < START_NOISE_FLOOR * largest))
        if self.init != "random" and narrow.size:
            problems.append(
                f"the variance of feature(s) {_listed(narrow)} is below "
                f"{START_NOISE_FLOOR:.0e} times that of feature "
                f"{int(np.argmax(variances))} ({largest:.3g}), under the floor of "
                "the linear start's noise variance, which all features share"
            )
        floored = np.flatnonzero(
            ~constant & (variances < FLOOR_FRACTION_WARNED * self.min_variance)
        )
        if floored.size:
            problems.append(
                f"the variance of feature(s) {_listed(floored)} is below "
                f"{FLOOR_FRACTION_WARNED:g} times min_variance "
                f"({self.min_variance:g}), the floor on the decoder's variance "
                "in the units of X: noise below 1 % of their variance cannot "
                "be modelled"
            )
        bound = math.exp(LOG_VARIANCE_BOUNDS[1])
        wide = np.flatnonzero(variances > bound)
        if self.decoder_variance == "heteroscedastic" and wide.size:
            problems.append(
                f"the variance of feature(s) {_listed(wide)} is above "
                f"{bound:.3g}, the largest the heteroscedastic decoder can give"
            )
        if problems:
            warnings.warn(
                f"With standardize=False, {' and '.join(problems)}: their "
                "density will be poor. Use standardize=True, or rescale X.",
                UserWarning,
                # The caller of fit, past this method, _initialize, _fit and
                # its two torch mode decorators, fit and _fit_context.
                stacklevel=8,
            )

    def _initialize(self, X, has_missing, first_chunk=False):
        if (
            self.init != "random"
            and self.n_components is not None
            and self.n_components > X.shape[1]
        ):
            raise ValueError(
                f"n_components={self.n_components} is more than the "
                f"{X.shape[1]} features of X: with init={self.init!r} training "
                "starts at a linear model, which has at most one latent "
                f"dimension per feature. Use n_components <= {X.shape[1]}, or "
                "init='random'."
            )
        self.device_ = resolve_device(self.device)
        rng = check_random_state(self.random_state)
        self._init_seed = init_seed = draw_seed(rng)
        self._train_seed, self._score_seed, self._split_seed = (
            draw_seed(rng) for _ in range(3)
        )
        mean, spread, constant, magnitude = feature_moments(X)
        self._unscaled = not self.standardize  # False or np.False_
        if self._unscaled:
            self.mean_ = np.zeros(X.shape[1])
            self.scale_ = np.ones(X.shape[1])
            self._warn_if_scales_defeat_the_bounds(spread, constant)
        else:
            # A constant feature: its magnitude rounded down to a power of two.
            self.mean_, self.scale_ = mean, np.where(constant, magnitude, spread)
            if first_chunk:
                self._warn_if_first_chunk_fixes_no_scale(X.shape[0], constant)
        self._variance_floor = self._start_variance_floor(X)
        self._start_to_refit = self._prior_structure = None
        self.marginal_knots_ = None
        start = None
        self.init_ = "random" if self.init == "random" else "linear"
        self._random_start_pending = self.init == "auto"
        if self.standardize in ("marginal", "auto") or self.init_ == "linear":
            start = self._choose_start(X, init_seed)
        # The encoder sees the mask only when the first training data has
        # missing entries, so that complete-data models stay as they were.
        self._new_module(
            X.shape,
            start,
            mask_input=has_missing,
            prior_components=self._prior_components(start),
        )
        self._history = TrainingHistory()
        # Read (and cleared) by this call's training: a first partial_fit
        # chunk is fitted as fit would fit it where that has a closed form.
        self._first_chunk = first_chunk

    def _new_module(self, shape, start=None, **build):
        """Set a new ``module_`` (and its optimiser) for data of ``shape``.

        Built from the same seed each time, by :meth:`_build_module` with
        ``build``'s arguments, and started at ``start`` where given.
        """
        with seeded_cpu_rng(self._init_seed):
            module = self._build_module(shape[1], **build)
        if start is not None:
            module.initialize_linear(start)
        self.module_ = module.to(self.device_)
        self._optimizer = self._make_optimizer(shape[0])

    def _start_variance_floor(self, X):
        """Per-feature floor on the variances of the linear start, or None.

        ``X`` is the data the model is initialized on (``mean_`` and
        ``scale_`` are set). The floor is in standardized units and applies
        there only, not to Gaussianized features. None: no floor beyond
        ``min_variance``.
        """
        return None

    def _prior_components(self, start):
        if start is not None:
            return start.prior_components
        return 1 if self.prior_components == "auto" else self.prior_components

    def _choose_start(self, X, seed):
        """Set ``marginal_knots_`` as ``standardize`` says; the linear start, if any.

        The start is computed on the rows early stopping trains on (at most
        ``START_ROWS`` of them; where entries are missing, see
        :meth:`_linear_start`). With
        ``standardize="auto"``, it is computed both on the standardized and
        on the Gaussianized features, and the Gaussianizing map is kept only
        if it gives the held-out rows a higher likelihood, in the units of X,
        by more than ``SIGNIFICANCE`` standard errors of the per-row gain.
        With a BIC-chosen mixture prior and at least ``MIN_CHOICE_ROWS``
        held-out rows, the start and those rows are left in
        ``_start_to_refit`` for :meth:`_train_on`, which looks for a larger
        mixture (:func:`larger_prior`) should training not beat the start.
        """
        candidates = {"affine": None}
        if self.standardize in ("marginal", "auto"):
            candidates["marginal"] = None
            if self.standardize == "marginal":
                del candidates["affine"]
        # The rows early stopping holds out, also held out here: the start
        # competes with the trained weights on them.
        train, held_out = np.arange(X.shape[0]), None
        stopping = self._uses_early_stopping(X.shape[0])
        if (stopping or len(candidates) > 1) and self._can_hold_out(X.shape[0]):
            train, held_out = train_test_split(
                train, test_size=self.validation_fraction, random_state=self._split_seed
            )
        if len(candidates) > 1 and (
            held_out is None or held_out.size < MIN_CHOICE_ROWS
        ):
            del candidates["marginal"]
        rng = np.random.default_rng(seed)
        Z = (X[_start_rows(train, rng)] - self.mean_) / self.scale_
        if held_out is not None:
            Z_held_out = (X[_start_rows(held_out, rng)] - self.mean_) / self.scale_
        if "marginal" in candidates:
            candidates["marginal"] = fit_marginal_knots(Z)
        if len(candidates) == 1 and self.init_ != "linear":
            # Nothing to choose and no start to train from.
            self.marginal_knots_ = next(iter(candidates.values()))
            return None
        results = {}
        for name, knots in candidates.items():
            start = self._linear_start(_internal(Z, knots)[0], seed, knots)
            internal, log_slope, score = None, 0.0, None
            if held_out is not None:
                internal, log_slope = _internal(Z_held_out, knots)
            if len(candidates) > 1:
                score = start_log_likelihood(start, internal) + log_slope
            results[name] = (knots, start, internal, score)
        name = next(iter(results))
        if len(results) > 1:
            gain = results["marginal"][3] - results["affine"][3]
            name = "marginal" if clearly_better(gain) else "affine"
        knots, start, internal, _ = results[name]
        self.marginal_knots_ = knots
        if (
            start.prior_search is not None
            and internal is not None
            and internal.shape[0] >= MIN_CHOICE_ROWS
        ):
            # For :meth:`_train_on`, should training not beat the start.
            self._start_to_refit = (start, internal)
        return start if self.init_ == "linear" else None

    def _keep_start_if_not_beaten(self, start, held_out):
        """Return to the linear start unless training clearly beat it on ``held_out``.

        Both are scored by :meth:`_log_likelihood`: the start exactly (its
        decoder is linear), the trained model by importance sampling, which
        the start's encoder would serve poorly on incomplete rows. The trained
        model is kept only if the held-out rows' log-likelihood gains more
        than ``SIGNIFICANCE`` standard errors of the per-row gain; otherwise
        ``kept_start`` is set, as when the start wins within training.
        """
        trained_model = module_snapshot(self.module_)
        trained = self._log_likelihood(held_out)
        restore_snapshot(self.module_, start)
        if clearly_better(trained - self._log_likelihood(held_out)):
            restore_snapshot(self.module_, trained_model)
        else:
            self._history.kept_start = True

    def _compare_random_start(self, held_out, data, config, result):
        """Train a randomly started network too; keep it if it is clearly better.

        ``init="auto"``: the network's usual random start, without a linear
        path and with ``n_components`` latent dimensions (``min(2, n_features)``
        when that is None: a low-dimensional nonlinear model beside the
        full-dimensional linear start), trained on the same rows. It replaces
        the linear-start model only if the held-out rows' log-likelihood gains
        more than ``SIGNIFICANCE`` standard errors of the per-row gain.

        With ``learning_rate="adaptive"`` the network first trains at the
        full rate to its first plateau; it goes on at the lower rates only if
        the start is not then clearly better on the held-out rows, so that a
        network far behind the start (most real data) costs no more than
        before. For the same reason its patience grows with its epochs
        (:func:`~skvae._training.patience`) only while the start does not
        clearly lead its best weights so far. Returns the training result of
        the model kept.
        """
        linear = (self.module_, self._optimizer, self._history, result, self.init_)
        linear_scores = self._log_likelihood(held_out)
        n_features = held_out.shape[1]
        n_components = self.n_components
        if n_components is None:
            n_components = min(RANDOM_START_COMPONENTS, n_features)
        self._new_module(
            (data.X.shape[0], n_features),
            mask_input=self.module_.mask_input,
            n_components=n_components,
            linear_path=False,
        )
        self._history = TrainingHistory()
        self.init_ = "random"

        def more_patience():
            # Epochs past n_iter_no_change only for a network the start does
            # not clearly lead: its best weights so far, on the held-out rows.
            best = self._history.best_state
            current = module_snapshot(self.module_)
            restore_snapshot(self.module_, current if best is None else best)
            try:
                gain = linear_scores - self._log_likelihood(held_out)
            finally:
                restore_snapshot(self.module_, current)
            return not clearly_better(gain)

        first = dataclasses.replace(
            config, learning_rate_drops=0, more_patience=more_patience
        )
        random_result = fit_module(
            self.module_, self._optimizer, data, first, self._history
        )
        gain = self._log_likelihood(held_out) - linear_scores
        epochs_left = config.n_epochs - self._history.n_iter
        if (
            config.learning_rate_drops
            and random_result.converged
            and epochs_left > 0
            and not clearly_better(-gain)
        ):
            # Continue from the weights of the first plateau, as a plateau in
            # the loop would; the lower rates' weights are kept only if they
            # beat those (as any start is).
            self._history.restart()
            lower_learning_rate(
                self.module_, self._optimizer, self._history, config.verbose
            )
            lower = dataclasses.replace(
                config,
                n_epochs=epochs_left,
                learning_rate_init=None,  # go on at the lowered rate
                learning_rate_drops=config.learning_rate_drops - 1,
                more_patience=more_patience,
                final_epochs=0,
            )
            random_result = fit_module(
                self.module_, self._optimizer, data, lower, self._history
            )
            gain = self._log_likelihood(held_out) - linear_scores
        if clearly_better(gain):
            return random_result
        self.module_, self._optimizer, self._history, result, self.init_ = linear
        return result

    def _start_on_all_rows(self, X, tensor, mask, structures=None):
        """Restart the module at the linear start fitted to every row of X.

        With a mixture prior of the ``(covariance_type, n_components)`` pairs
        given as ``structures`` (:func:`larger_prior`'s), if any. Returns the
        mean KL per latent dimension over the rows (``tensor``, X in
        internal units, with its ``mask``).
        """
        Z = (X[self._rows_of_start_on_all(X)] - self.mean_) / self.scale_
        start = self._linear_start(
            _internal(Z, self.marginal_knots_)[0],
            self._init_seed,
            self.marginal_knots_,
            structures,
            averaged=True,
        )
        self._new_module(
            X.shape,
            start,
            mask_input=self.module_.mask_input,
            prior_components=start.prior_components,
        )
        _, kl = posterior_statistics(self.module_, tensor, self._score_seed, 0, mask)
        return kl.cpu().double().numpy()

    def _linear_start(self, Z, seed, knots, structures=None, averaged=False):
        """The closed-form start on Z, in the internal units that ``knots`` give.

        Where Z has missing entries (NaN), the start is computed from the
        maximum-likelihood Gaussian of its observed entries and from its rows
        completed with draws from their conditionals under it
        (:func:`filled_rows`).

        With a mixture prior of the first ``(covariance_type, n_components)``
        pair of ``structures``, if any, else as ``prior_components`` says;
        with ``averaged`` and ``prior_components="auto"``, the average of
        ``AVERAGED_MIXTURES`` mixtures of those structures in turn
        (:func:`averaged_mixture`).
        """
        if structures and isinstance(structures[0], str):
            # One pair, as models saved before the tuple of pairs keep it.
            structures = (structures,)
        n_components = Z.shape[1] if self.n_components is None else self.n_components
        floor = getattr(self, "_variance_floor", None) if knots is None else None
        moments = None
        if np.isnan(Z).any():
            Z, moments = filled_rows(Z, self.min_variance, START_FILL_SEED)
        start = probabilistic_pca(
            Z,
            n_components,
            self.min_variance,
            self.shrinkage,
            floor,
            moments,
            per_feature_noise=self.decoder_variance in ("feature", "heteroscedastic"),
        )
        if self.prior_components == 1:
            return start
        n_averaged = 1
        if averaged and self.prior_components == "auto":
            n_averaged = AVERAGED_MIXTURES
        return mixture_prior(
            start,
            Z,
            self.prior_components,
            seed,
            self.min_variance,
            structures[0] if structures else None,
            n_averaged,
            structures[1:] if structures else (),
        )

    def _build_module(
        self,
        n_features,
        mask_input=False,
        prior_components=1,
        n_components=None,
        linear_path=None,
    ):
        """A new, untrained torch module for ``n_features`` features, on the CPU.

        ``n_components`` and ``linear_path`` default to what the parameters
        and ``init_`` say.
        """
        if n_components is None:
            n_components = self.n_components
        if linear_path is None:
            linear_path = self.init_ == "linear"
        return VAEModule(
            n_features=n_features,
            n_components=n_features if n_components is None else n_components,
            hidden_layer_sizes=self._hidden_layer_sizes(),
            activation=self.activation,
            decoder_variance=self.decoder_variance,
            min_variance=self.min_variance,
            mask_input=mask_input,
            linear_path=linear_path,
            prior_components=prior_components,
        )

    def _make_optimizer(self, n_samples):
        return make_optimizer(
            self.module_, self.learning_rate_init, self.alpha / max(n_samples, 1)
        )

    # ---------------------------------------------------------------- inference

    @property
    def n_components_(self):
        """Number of latent dimensions of the fitted model.

        Read from the fitted network, so that a model saved before it was
        an attribute has it too.
        """
        return self.module_.n_components

    def _validated(self, X):
        check_is_fitted(self)
        X = validate_data(
            self,
            X,
            reset=False,
            dtype=[np.float64, np.float32],
            ensure_all_finite="allow-nan",
        )
        return self._mark_missing(X)

    def _mark_missing(self, X):
        """Validated X with its missing entries as NaN, which is how they come."""
        return X

    def _importance_draws(self):
        """The quasi-random draws of z shared by every row scored."""
        return importance_draws(
            self.module_.n_components,
            self.n_importance_samples,
            self._score_seed,
            self.device_,
            inference_dtype(self.device_),
        )

    def _map_rows(self, X, fn, width, extra=()):
        """:func:`~skvae._inference.map_rows` on standardized rows of X."""
        return map_rows(
            self.module_,
            X,
            fn,
            device=self.device_,
            mean=self.mean_,
            scale=self.scale_,
            knots=self.marginal_knots_,
            width=width,
            extra=extra,
        )

    def _unstandardize(self, X):
        return unstandardize(X, self.mean_, self.scale_, self.marginal_knots_)

    def _log_jacobian_rows(self, X):
        return log_jacobian_rows(X, self.mean_, self.scale_, self.marginal_knots_)

    def _log_likelihood(self, X):
        """IWAE estimate of log p(x_o) for validated X, in the units of X."""
        return log_likelihood(
            self.module_,
            X,
            mean=self.mean_,
            scale=self.scale_,
            draws=self._importance_draws(),
            device=self.device_,
            knots=self.marginal_knots_,
        )

    def score_samples(self, X):
        """Log-likelihood of each row, in the units of X.

        An importance-weighted estimate (the IWAE bound, Burda et al. 2016)
        of log p(x) with ``n_importance_samples`` draws from q(z|x), tighter
        than the ELBO. The same standard-normal draws serve every row, so
        the result is deterministic and the same whether rows are scored
        together or one at a time. It includes the log-Jacobian of the
        internal standardization, so it compares with
        :meth:`sklearn.decomposition.PCA.score_samples` and
        :meth:`sklearn.mixture.GaussianMixture.score_samples`. Where the
        decoder is linear (no hidden layers, or hidden layers that add
        nothing yet, as at a linear start that training did not beat) and its
        variance does not depend on z, the model is a Gaussian,
        ``N(b, W W^T + diag(sigma^2))``, or, under a mixture prior, a mixture
        of such Gaussians, one per component; log p(x) is then computed
        exactly instead, without draws, in float64 (on MPS, which has none,
        on the CPU: float32 would lose too many digits).

        Missing entries (NaN) are marginalised out: a row's score is then the
        log-density of its observed entries, ``log p(x_o)``, which the
        diagonal decoder gives exactly by leaving the missing entries out of
        p(x|z). Scores of rows with different missing entries are densities
        over different spaces and do not compare. A row with no observed
        entry scores 0, the log-probability of observing nothing.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data; NaN marks a missing entry.

        Returns
        -------
        log_likelihood : ndarray of shape (n_samples,)
            Log-density of each row's observed entries under the model.

        Examples
        --------
        Densities are in the units of X: the same data in units 1024 times
        smaller have log-densities lower by ``n_features * log(1024)``.

        >>> import numpy as np
        >>> from skvae import GaussianVAE
        >>> X = np.random.default_rng(0).normal(size=(100, 3))
        >>> vae = GaussianVAE(max_iter=5, random_state=0).fit(X)
        >>> vae_fine = GaussianVAE(max_iter=5, random_state=0).fit(1024 * X)
        >>> shift = vae_fine.score_samples(1024 * X) - vae.score_samples(X)
        >>> bool(np.allclose(shift, -3 * np.log(1024)))
        True
        """
        return self._log_likelihood(self._validated(X))

    def score(self, X, y=None):
        """Mean log-likelihood of the rows of X, in the units of X.

        Higher is better, so :class:`~sklearn.model_selection.GridSearchCV`
        can tune the model without labels, as for ``GaussianMixture``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        log_likelihood : float
            Mean of :meth:`score_samples` over the rows.

        Examples
        --------
        >>> import numpy as np
        >>> from skvae import GaussianVAE
        >>> X = np.random.default_rng(0).normal(size=(100, 3))
        >>> vae = GaussianVAE(max_iter=5, random_state=0).fit(X[:80])
        >>> held_out = vae.score(X[80:])
        >>> bool(np.isclose(held_out, vae.score_samples(X[80:]).mean()))
        True
        """
        return float(np.mean(self.score_samples(X)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # ----------------------------------------------------------------- pickling

    def __getstate__(self):
        # object.__getstate__ returns the live __dict__: copy before editing.
        state = dict(super().__getstate__())
        # The optimiser is rebuilt on demand. The module travels as numpy
        # arrays, so a model trained on a GPU loads on a machine without one,
        # and so that skops.io, which cannot store torch tensors, can save it.
        state.pop("_optimizer", None)
        if "module_" in state:
            state["module_"] = _module_state(self.module_)
            state.pop("device_", None)
        return state

    def __setstate__(self, state):
        self._set_state(state, stacklevel=4)

    def _set_state(self, state, stacklevel):
        """Restore a pickled state; a fallback to the CPU warns at ``stacklevel``."""
        super().__setstate__(state)
        if "module_" in state:
            self.module_ = self._module_from_state(state["module_"])
            self._place_loaded_module(stacklevel=stacklevel)

    def _module_from_state(self, state):
        """Rebuild the torch module from :func:`_module_state`'s output.

        As it was fitted, whatever the parameters say now (they may have
        been set since): the hidden layers' sizes are read off the weights,
        the rest from the module's attributes (the activation from the
        parameters in files saved before it was stored).
        """
        flags = state["flags"]
        mode = flags.get("variance_mode", "feature")
        activation = flags.get("activation", self.activation)
        try:
            if activation not in ACTIVATIONS:
                raise ValueError
            # On the meta device: nothing is allocated until the weights,
            # checked against the shapes, are assigned (a crafted file's
            # absurd widths cost nothing); placed on its device after.
            with torch.device("meta"):
                module = VAEModule(
                    n_features=int(flags["n_features"]),
                    # Read off the encoder where a file lacks it: files saved
                    # before numpy integers were stored as ints dropped it.
                    n_components=int(
                        flags.get(
                            "n_components",
                            np.shape(state["weights"]["encoder_head.weight"])[0] // 2,
                        )
                    ),
                    hidden_layer_sizes=_hidden_layer_sizes(state["weights"]),
                    activation=activation,
                    # A fixed variance is a buffer among the weights.
                    decoder_variance=1.0 if mode == "fixed" else str(mode),
                    min_variance=float(flags.get("min_variance", self.min_variance)),
                    mask_input=bool(flags.get("mask_input", False)),
                    linear_path=bool(flags.get("linear_path", False)),
                    prior_components=int(flags.get("prior_components", 1)),
                )
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError):
            module = None
        if (
            module is None
            or set(flags) - set(vars(module))
            or not all(isinstance(v, (bool, int, float, str)) for v in flags.values())
        ):
            raise ValueError(f"Invalid module attributes {flags!r:.200}.")
        weights = {k: np.asarray(v) for k, v in state["weights"].items()}
        if not all(v.dtype.kind == "f" for v in weights.values()):
            raise ValueError("The weights are not floating-point arrays.")
        weights = {
            k: torch.from_numpy(np.array(v, dtype=np.float32))
            for k, v in weights.items()
        }
        try:
            module.load_state_dict(weights, strict=True, assign=True)
        except RuntimeError as exc:
            raise ValueError(f"The weights do not fit the parameters: {exc}") from None
        for name, value in flags.items():
            setattr(module, name, value)
        return module

    def _place_loaded_module(self, stacklevel):
        """Resolve ``device`` again on load; fall back to the CPU if it is absent."""
        try:
            self.device_ = resolve_device(self.device)
        except ValueError as exc:
            warnings.warn(
                f"{exc} The model is loaded on the CPU instead.",
                UserWarning,
                stacklevel=stacklevel,
            )
            self.device_ = torch.device("cpu")
        self.module_.to(self.device_)


def _listed(indices, shown=5):
    """Feature indices for a message: the first ``shown``, and how many more."""
    more = len(indices) - shown
    return str(indices[:shown].tolist()) + (f" and {more} more" if more > 0 else "")


def _in_units(stored, internal, n_earlier, shift):
    """A curve in the units of X: the ``n_earlier`` values ``stored`` by
    earlier calls, then the rest of ``internal`` shifted by this call's
    ``shift``; all of it shifted where ``stored`` does not hold those values
    (a new history, or none stored)."""
    if stored is None or len(stored) != n_earlier:
        stored, n_earlier = [], 0
    return [*stored[:n_earlier], *(value + shift for value in internal[n_earlier:])]


def _module_state(module):
    """The module's weights as CPU numpy arrays, and its plain attributes."""
    return {
        "weights": {
            k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()
        },
        "flags": {
            k: v
            for k, v in vars(module).items()
            if not k.startswith("_") and isinstance(v, (bool, int, float, str))
        },
    }


def _hidden_layer_sizes(weights):
    """The hidden layers' widths of a module, from its encoder's weights."""
    layers = sorted(
        int(name.split(".")[1])
        for name in weights
        if name.startswith("encoder_body.") and name.endswith(".weight")
    )
    return tuple(int(weights[f"encoder_body.{i}.weight"].shape[0]) for i in layers)


def _start_rows(rows, rng):
    """At most ``START_ROWS`` of ``rows``, drawn with the generator ``rng``, in order."""
    return np.sort(rng.permutation(rows)[:START_ROWS])


def _internal(Z, knots):
    """Standardized rows in internal units, missing entries NaN, and the log-Jacobian.

    ``Z`` Gaussianized with ``knots`` (as it is without them), and per row
    the sum of log G' over its observed entries (0 without knots).
    """
    if knots is None:
        return Z, 0.0
    internal, log_slope = gaussianize(Z, knots)
    return internal, log_slope.sum(1)
