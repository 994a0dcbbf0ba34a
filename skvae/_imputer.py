"""VAEImputer: fill missing entries with a Gaussian VAE trained on incomplete data."""

from numbers import Real

import numpy as np
from sklearn.base import OneToOneFeatureMixin, TransformerMixin
from sklearn.impute import MissingIndicator
from sklearn.utils import check_random_state

from ._base import BaseGaussianVAE
from ._inference import conditional_draw_fn, conditional_mean_fn


class VAEImputer(OneToOneFeatureMixin, TransformerMixin, BaseGaussianVAE):
    """Impute missing values with a Gaussian VAE fitted to the observed entries.

    By default the model is the linear VAE with one latent dimension per
    feature, whose fit is the maximum-likelihood Gaussian of the observed
    entries, found by EM in closed form (no epochs; see ``init``), its
    correlations shrunk by the Ledoit-Wolf coefficient (see ``shrinkage``);
    each missing entry is filled with its exact conditional mean given the
    observed entries of its row, as under a multivariate normal model
    (Little and Rubin 2019). That was the most accurate of the settings
    measured on 22 real data sets, ahead of the nonlinear network below and
    of :class:`~sklearn.impute.IterativeImputer` at 10, 30 and 50 % of the
    entries missing (:doc:`/benchmarks`). With hidden layers
    (``hidden_layer_sizes``) the model is a nonlinear
    :class:`skvae.GaussianVAE`, trained on the masked ELBO: only
    the observed entries of each row enter the likelihood, and the encoder
    sees the observed values together with the missingness mask. Each missing
    entry is then filled with its conditional expectation given the observed
    entries of its row, E[x_m | x_o], estimated by self-normalised importance
    sampling over the same draws as :meth:`score_samples` (the single
    imputation rule of MIWAE, Mattei and Frellsen 2019)::

        x_m = sum_k w_k mu_m(z_k) / sum_k w_k,  w_k = p(x_o|z_k) p(z_k) / q(z_k|x_o)

    Where the decoder is linear (no hidden layers, or a linear start that
    training did not beat), E[x_m | x_o] is computed exactly instead, as the
    density is (see ``n_importance_samples``): the decoder mean at the mean of
    the posterior p(z | x_o), a Gaussian mixture in closed form (in float64;
    on MPS, which has none, on the CPU). With Gaussianized
    features (``standardize="marginal"``), it is the conditional mean in the
    model's internal units, mapped back to the units of X: there, the map
    being increasing, the conditional median, which on skewed features lies
    below the mean (the default ``standardize=True`` gives the mean).
    With ``sample_posterior=True`` each missing entry is instead a draw from
    the model's p(x_m | x_o) (for a Gaussian model, the exact conditional
    Gaussian; otherwise sampling importance resampling, then decoder
    noise), for multiple imputation. Observed entries are returned unchanged.
    NaN marks a missing entry, or the value of ``missing_values``.

    Parameters
    ----------
    n_components : int or None, default=None
        Dimension of the latent space; None gives one latent dimension per
        feature, as :class:`~sklearn.decomposition.PCA` keeps all components.
        More than one per feature needs ``init="random"``: the linear start
        has at most as many.

    prior_components : int or "auto", default=1
        Number of Gaussian components of the prior p(z). 1 is the standard
        normal prior N(0, I); more make p(z) a mixture of full-covariance
        Gaussians with learned weights, means and covariances, so that the
        model can follow clustered, multimodal or zero-inflated data.
        ``"auto"`` chooses the number by BIC, from 1 to 16, on the latent
        codes of the linear start (see ``init``), among mixtures with full or
        diagonal covariances and no more parameters than rows. Where early
        stopping holds out 10 rows or more and training does not beat the
        closed-form start, the start refitted on all rows may take a larger
        mixture instead (and keeps it in warm-started refits): the search
        goes on without that cap, then, for the covariance type the
        held-out rows score best, with mixtures 1.5 times as large (up to
        64 components) until three in a row fail to beat the best; the
        smallest mixture within one standard error of the held-out rows'
        best replaces BIC's choice if it is clearly better on those rows.
        With fewer than 500 held-out rows, the larger mixtures within that
        standard error are compared with BIC's choice by 5-fold
        cross-validation on all the rows instead, and the best of them
        replaces it if clearly better there. Wherever the start is kept
        (training does not beat it, or nothing trains, as in the closed-form
        fit of a linear model), its prior, refitted on all rows, is the
        average of 20 mixtures, each fitted by EM from its own random
        initialization (each component with a twentieth of the weight it has
        in its own mixture): of the size chosen or, where the held-out rows
        or the cross-validation chose it, of that size and, in turn, the
        larger ones within their standard error of the best. The local
        optima of EM differ, and their average generalizes better than any
        one of them (Ormoneit and Tresp 1998). A single component is not
        averaged, nor is an integer ``prior_components``: the prior then has
        that many components.
        A mixture the decoder noise cannot follow (a component narrower than
        ``min_variance`` allows) is widened to what it can.

    hidden_layer_sizes : array-like of int or int, default=()
        Hidden layer widths of the encoder; the decoder mirrors them. One int
        is one hidden layer, as in :class:`~sklearn.neural_network.MLPRegressor`.
        An empty tuple gives a linear encoder and decoder (a linear VAE, whose
        maximum likelihood solution is probabilistic PCA or factor analysis).

    activation : {"identity", "logistic", "tanh", "relu"}, default="relu"
        Activation of the hidden layers.

    init : {"auto", "linear", "random"}, default="linear"
        Where training starts.

        - ``"linear"``: the encoder and decoder means each get a linear path
          beside their hidden layers (the decoder mean is ``W z + b +
          MLP(z)``), started at the closed-form linear-Gaussian solution
          (with as many latent dimensions as features, the
          maximum-likelihood Gaussian, its correlations shrunk as
          ``shrinkage`` says; with fewer, probabilistic PCA (Tipping and
          Bishop 1999) for a shared variance and factor analysis for one
          per feature) and, with a mixture prior, at a Gaussian
          mixture fitted to its latent codes. The hidden
          layers' contributions start at zero, so training adds to what the
          Gaussian or the mixture achieves instead of starting from noise;
          with early stopping, the start is kept unless training beats it on
          the validation rows (with missing entries, by the log-likelihood
          that :meth:`score_samples` estimates, not by the ELBO, which the
          start's encoder serves poorly on incomplete rows). Where rows
          have missing entries, the start is computed from the
          maximum-likelihood Gaussian of the observed entries, found by EM,
          and from the rows completed with draws from their conditional
          distribution under it. Without hidden layers, with as many
          latent dimensions as features, the N(0, I) prior and a
          per-feature or shared decoder variance, the model is a Gaussian
          and its start is its fit: :meth:`fit` runs no epoch, and
          :meth:`score_samples` is exact.
        - ``"random"``: the network's usual random initialization, without a
          linear path.
        - ``"auto"``: both, with early stopping; the randomly started network
          (with ``n_components`` latent dimensions, or 2 (at most one per
          feature) when that is None: a
          low-dimensional nonlinear model beside the full-dimensional linear
          one) is kept only if it gives the validation rows a higher
          log-likelihood by more than two standard errors of the per-row
          gain. Without validation rows, ``"linear"``. ``init_`` says which
          was kept.

    shrinkage : float in [0, 1] or "auto", default="auto"
        How far the correlations of the linear start (see ``init``) are
        shrunk toward zero: the covariance ``S`` of the features in the
        model's internal units becomes ``(1 - shrinkage) * S + shrinkage *
        diag(S)``, the variances unchanged, which makes the start a maximum a
        posteriori fit rather than the maximum-likelihood one (the estimator
        of Ledoit and Wolf 2004, shrunk toward the identity in correlation).
        ``"auto"`` takes the Ledoit-Wolf coefficient,
        :func:`sklearn.covariance.ledoit_wolf_shrinkage` of the rows scaled
        to unit variance. Shrinkage steadies the start where rows are few for
        the number of features. It has no effect with ``init="random"``, and
        the components of a mixture prior are not shrunk. Where entries are
        missing, the covariance shrunk is EM's (see ``init``), and ``"auto"``
        computes the coefficient on the rows completed with draws from
        their conditional distribution.

    decoder_variance : {"feature", "shared", "heteroscedastic"} or float, \
            default="feature"
        How the decoder's variance sigma^2 is set.

        - ``"feature"``: one variance per feature (as in factor analysis), set
          to its closed-form optimum, the mean squared residual (Rybkin et al.
          2021).
        - ``"shared"``: one variance for all features (as in probabilistic
          PCA), closed-form likewise.
        - ``"heteroscedastic"``: sigma^2(z) from a head of the decoder network.
          The mean is first trained for a warm-up under the per-feature
          variance, since variance networks trained from the start tend to fit
          the noise instead of the mean (Detlefsen et al. 2019).
        - a positive float: a fixed variance, in the model's internal units
          (see ``min_variance``). This is the usual "MSE + weight * KL" VAE;
          kept so the difference can be seen, not recommended.

        After training, the per-feature or shared variance is computed once on
        the whole training set, so scoring is deterministic.

    min_variance : float, default=1e-4
        Floor on every decoder variance, in the model's internal units: the
        floor in the units of X is ``min_variance * scale_ ** 2``, a fraction
        of each feature's variance with ``standardize=True`` (see ``scale_``)
        and ``min_variance`` itself with ``standardize=False``. The Gaussian
        likelihood is unbounded as a variance goes to zero. The linear start
        (see ``init``) also keeps its noise variance at least 4e-8 times the
        largest eigenvalue of the covariance in internal units, so that the
        encoder can represent its narrowest posterior: a closed-form
        Gaussian's covariance has a condition number of at most 2.5e7, as
        :class:`~sklearn.mixture.GaussianMixture`'s ``reg_covar`` bounds
        its covariances from below.

    beta : float, default=1.0
        Weight of the KL term. 1 gives the true ELBO; other values give the
        beta-VAE objective, which is no longer a bound on the log-likelihood
        (``score_samples`` still estimates the fitted model's log p(x)).

    kl_warmup : int, default=0
        Number of epochs over which the KL weight rises linearly from
        ``beta / kl_warmup`` to ``beta``; can help against posterior collapse.

    standardize : bool or {"marginal", "auto"}, default=True
        How each feature is brought to the model's internal units. Outputs
        are in the units of X whichever is chosen; the log-Jacobian of the map
        is part of :meth:`score_samples`.

        - ``True``: standardize, by the mean and standard deviation of the
          feature's observed entries (see ``mean_`` and ``scale_``).
        - ``False``: no change; the network works in the units of X. The
          linear start's noise variance, which all features share, is then
          at least 4e-8 times the largest eigenvalue of X's covariance (so
          that the encoder can represent the narrowest posterior), every
          decoder variance is at least ``min_variance``, and a
          heteroscedastic decoder's variances are at most ``exp(20)``: a
          warning names the features whose variance is past the first or
          the third bound, or under 100 times ``min_variance``, as on
          features whose scales are far apart or small.
        - ``"marginal"``: standardize, then Gaussianize each feature through
          a smooth increasing map that makes its distribution close to a
          standard normal (a kernel estimate of its distribution function
          followed by the normal quantile function, linear between knots at
          its quantiles; see ``marginal_knots_``). Skewed, heavy-tailed,
          discrete or zero-inflated features then reach the network with
          Gaussian marginals (a Gaussian copula), and the network models
          the dependence between them.
        - ``"auto"``: ``"marginal"`` if it gives the linear start a higher
          likelihood, in the units of X, on the held-out rows (a
          ``validation_fraction`` of them) by more than two standard errors;
          else ``True``.

    batch_size : int or "auto", default="auto"
        Rows per optimiser step (capped at the number of training rows; the
        value used is ``batch_size_``). ``"auto"`` uses
        ``2 ** round(log2(n_samples / 32))`` clipped to [32, 1024]: small data
        sets still get about 32 steps per epoch, while large ones use batches
        big enough to amortise the per-step overhead that dominates a network
        of this size, without the many extra epochs that still larger batches
        need to reach the same held-out likelihood. The measurements behind
        the rule are in :doc:`/guide/scaling`.

    max_iter : int, default=200
        Maximum number of epochs.

    learning_rate : {"adaptive", "constant"}, default="adaptive"
        Learning-rate schedule, named as in
        :class:`~sklearn.neural_network.MLPRegressor`. ``"constant"`` keeps
        ``learning_rate_init`` and stops the first time the stopping rule
        fires (``n_iter_no_change``). ``"adaptive"`` lowers the rate on a
        plateau instead: the first two times the rule fires, training goes on
        from the best weights so far (by validation ELBO with early stopping)
        at a tenth of the rate, and the third time it stops. With early
        stopping, a plateau stops training at once unless the validation
        ELBO has clearly risen (by two standard errors of the per-row gain)
        over the stage that ends: above the starting weights' at the first
        plateau, above the best weights of the previous rate at the second.
        The last tenth of ``max_iter`` is kept for the lower rates: the
        stage still running when only that is left ends there as at a
        plateau.
        Each ``fit`` starts at
        ``learning_rate_init``; ``partial_fit`` goes on at the current rate
        and never lowers it.

    learning_rate_init : float, default=1e-3
        Adam's step size.

    alpha : float, default=0.0
        L2 penalty on the network weights: ``alpha / 2 * ||W||^2`` is added to
        the negative ELBO summed over the rows each call trains on (less
        those held out for early stopping), a Gaussian prior on the weights.
        ``partial_fit`` applies it per chunk, so many small chunks are
        penalized more than one ``fit`` on their rows. It acts on training
        only: a closed-form start that training does not beat (see
        ``init``), and a model fitted in closed form, are the same whatever
        ``alpha``.

    early_stopping : bool or "auto", default=False
        Whether to hold out ``validation_fraction`` of the rows and stop when
        their ELBO stops improving, restoring the best weights (the starting
        weights included: with ``init="linear"``, the closed-form start is
        kept unless training beats it on the held-out rows by more than two
        standard errors). ``"auto"`` holds rows out when the split leaves at
        least two; the same rows choose between the linear start and the
        network (``init="auto"``) and between the features' maps
        (``standardize="auto"``). Without it, training stops on the training
        loss, as ``MLPRegressor`` does by default, which is the safer rule for
        a randomly initialized network alone: on heavy-tailed data a few
        held-out rows can dominate the mean validation ELBO early in training
        and stop it too soon (see :doc:`/benchmarks`).

    validation_fraction : float, default=0.1
        Proportion of rows held out for early stopping.

    n_iter_no_change : int, default=10
        Epochs without an improvement of at least ``tol`` before stopping,
        or before the rate is lowered (``learning_rate="adaptive"``). The
        patience grows with the run: it is the larger of ``n_iter_no_change``
        and a fifth of the epochs run at the current rate in this call to
        ``fit`` (after any warm-up), so that a long run still improving by a
        little per epoch, which the noise of the criterion hides for more
        than ``n_iter_no_change`` epochs at a time, is not cut short.

    tol : float, default=1e-4
        Improvement, in nats per row, that counts: of the training loss, or of
        the validation ELBO with early stopping.

    n_importance_samples : int, default=64
        Draws from q(z|x) per row in :meth:`score_samples`. The draws are the
        same for every row (quasi-random, fixed at fit time), so scores are
        deterministic; more draws tighten the bound and lower its noise, at a
        cost linear in their number. Where the decoder is linear (no hidden
        layers, or a linear start that training did not beat), the density is
        a Gaussian or a Gaussian mixture, computed exactly without draws.

        The imputations of :meth:`transform` are estimated with the same
        draws, so they are deterministic too (unless
        ``sample_posterior=True``); where the decoder is linear, they are
        exact, without draws.

    device : str or torch.device, default="auto"
        Where to train and score: ``"auto"`` picks CUDA, then MPS, then the
        CPU. ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a
        :class:`torch.device` are accepted; an unavailable device is an error.

    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the order of the batches, the importance
        draws, the validation split, and any random draw the fitted estimator
        makes without a seed of its own. An int gives identical results on the
        CPU for identical data. Torch's global random state is never touched.

    verbose : int, default=0
        Print one line per epoch with the training loss and validation ELBO.

    warm_start : bool, default=False
        Continue training from the fitted weights on the next call to
        :meth:`fit` instead of starting afresh. The network's shape
        (``n_components``, ``prior_components``, ``hidden_layer_sizes``,
        ``activation``, the kind of ``decoder_variance``) and the features'
        map (``standardize``) cannot change in between: a ValueError says
        so. A new ``device`` is followed: the model and the optimiser's
        state move to it (where it is not available, a warning says so and
        training goes on where the model is).

    missing_values : float or None, default=np.nan
        The placeholder of a missing entry, as in
        :class:`~sklearn.impute.SimpleImputer`: every entry equal to it is
        missing (NaN and None: every NaN). With another value, NaN in X is
        an error.

    add_indicator : bool, default=False
        If True, a :class:`~sklearn.impute.MissingIndicator` is stacked onto
        the output: one column per feature with missing values at fit time,
        as in :class:`~sklearn.impute.SimpleImputer`. With
        :meth:`partial_fit`, the features with missing values in the first
        chunk, so that the output keeps its width from chunk to chunk: make
        that chunk representative, as for ``mean_`` and ``scale_``.

    sample_posterior : bool, default=False
        Whether to draw each imputation from the model's predictive
        distribution given the observed entries instead of filling in its
        mean; fit several imputers with different ``random_state`` for
        multiple imputation, as with
        :class:`~sklearn.impute.IterativeImputer`. The draws are a function
        of ``random_state`` and X: :meth:`transform` repeats them when
        called again on the same X, and a row's draw depends on its
        position in X (row i takes the i-th of the random numbers drawn).

    Attributes
    ----------
    module_ : torch.nn.Module
        The fitted torch model, on ``device_``.

    device_ : torch.device
        The device resolved from ``device``.

    mean_ : ndarray of shape (n_features,)
        Per-feature mean of the observed entries of the data the model was
        initialised on (by :meth:`fit`, or by the first call to
        :meth:`partial_fit`), used for standardization; zeros with
        ``standardize=False``.

    scale_ : ndarray of shape (n_features,)
        Per-feature scale used for standardization: the standard deviation of
        the observed entries, computed with ``mean_``, except for a constant
        feature, whose spread is zero: it is scaled by its magnitude rounded
        down to a power of two (0.5 if it is all zeros). Ones with
        ``standardize=False``.

    init_ : {"linear", "random"}
        The start of the fitted model (see ``init``).

    marginal_knots_ : list of ndarray or None
        The Gaussianizing map of each feature (``standardize="marginal"``, or
        ``"auto"`` where it was chosen): an array of shape (n_knots, 2) of
        (standardized value, Gaussianized value) pairs, between which the map
        is linear, and beyond which it continues the end segments. None when
        the features are only standardized.

    noise_variance_ : ndarray of shape (n_features,) or None
        Decoder variance in the units of X; None for a heteroscedastic decoder,
        whose variance depends on z. With Gaussianized features
        (``marginal_knots_``) the decoder's noise is Gaussian in internal
        units, not in those of X: this is then its variance times
        ``scale_ ** 2``, the noise's scale near the middle of each feature.

    n_components_ : int
        Number of latent dimensions of the fitted model: ``n_components``,
        or, when that is None, ``n_features`` (or, with ``init="auto"``,
        those of the randomly started network if it was kept, see
        ``init``).

    kl_per_component_ : ndarray of shape (``n_components_``,)
        Mean KL divergence of each latent dimension over the training rows, in
        nats. A dimension near zero has collapsed onto the prior and is
        unused. Under a mixture prior, the KL to the Gaussian with the
        prior's mean and variance in that dimension.

    batch_size_ : int
        Number of rows per optimiser step, resolved from ``batch_size``.

    n_iter_ : int
        Number of epochs run since the model was initialised: a :meth:`fit`
        with ``warm_start=True`` and each :meth:`partial_fit` add to it. A
        :meth:`fit` in closed form (see ``init``) runs none. Where training
        did not beat the linear start, which is then returned, they are the
        epochs of that discarded training (and ``loss_curve_`` its losses);
        with ``init="auto"``, the competing network's epochs are not counted.

    loss_curve_ : list of float
        Training objective after each epoch, one entry per epoch of
        ``n_iter_``: the negative ELBO of the observed entries, per row, in
        the units of X (of the rows that epoch trained on: a later
        :meth:`partial_fit` chunk does not move it).

    best_loss_ : float or None
        Lowest training loss (as in ``loss_curve_``) since the stopping rule
        last started afresh, at the start of a :meth:`fit`; None with early
        stopping, or after a :meth:`fit` in closed form.

    validation_scores_ : list of float or None
        ELBO per row of the validation set, in the units of X, after each
        epoch; None without early stopping.

    best_validation_score_ : float or None
        Best validation ELBO of the epochs run (of the discarded training
        where the linear start is kept, see ``n_iter_``); None without early
        stopping.

    indicator_ : :class:`~sklearn.impute.MissingIndicator` or None
        Indicator of missing values; None if ``add_indicator=False``.

    n_features_in_ : int
        Number of features seen during :term:`fit`.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :term:`fit`. Defined only when `X`
        has feature names that are all strings.

    See Also
    --------
    skvae.GaussianVAE : The model, with ``transform`` and ``score_samples``.
    sklearn.impute.IterativeImputer : Imputes each feature by regression on
        the others, in turn.
    sklearn.impute.KNNImputer : Imputes from the nearest neighbours.
    sklearn.impute.SimpleImputer : Imputes a per-feature statistic.

    Notes
    -----
    A feature with no observed value in the training data is an error: there
    is nothing to learn about it. A row with no observed value is filled with
    the model's estimate of the marginal mean, E[x] (the importance weights
    then only correct for the encoder's proposal).

    References
    ----------
    Mattei, P.-A. and Frellsen, J. (2019). MIWAE: Deep generative modelling
    and imputation of incomplete data sets. ICML.

    Nazabal, A., Olmos, P. M., Ghahramani, Z. and Valera, I. (2020). Handling
    incomplete heterogeneous data using VAEs. Pattern Recognition.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae import VAEImputer
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 1)) @ [[1.0, 2.0, -1.0]] + 5.0
    >>> X[::4, 1] = np.nan
    >>> imputer = VAEImputer(random_state=0).fit(X)
    >>> imputer.n_iter_  # the Gaussian's fit is closed-form: no epochs
    0
    >>> X_filled = imputer.transform(X)
    >>> bool(np.isnan(X_filled).any())
    False
    >>> bool(np.allclose(X_filled[::4, 1], 2 * X[::4, 0] - 5, atol=0.05))
    True
    >>> bool((X_filled[1] == X[1]).all())  # a complete row is unchanged
    True
    >>> VAEImputer(add_indicator=True).fit_transform(X).shape
    (200, 4)
    >>> nonlinear = VAEImputer(n_components=2, hidden_layer_sizes=(64, 64),
    ...                        init="random", max_iter=20, random_state=0)
    >>> bool(np.isnan(nonlinear.fit_transform(X)).any())
    False
    """

    _parameter_constraints: dict = {
        **BaseGaussianVAE._parameter_constraints,
        "missing_values": [Real, None],
        "add_indicator": ["boolean"],
        "sample_posterior": ["boolean"],
    }

    def __init__(
        self,
        n_components=None,
        *,
        prior_components=1,
        hidden_layer_sizes=(),
        activation="relu",
        init="linear",
        shrinkage="auto",
        decoder_variance="feature",
        min_variance=1e-4,
        beta=1.0,
        kl_warmup=0,
        standardize=True,
        batch_size="auto",
        max_iter=200,
        learning_rate="adaptive",
        learning_rate_init=1e-3,
        alpha=0.0,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        n_importance_samples=64,
        device="auto",
        random_state=None,
        verbose=0,
        warm_start=False,
        missing_values=np.nan,
        add_indicator=False,
        sample_posterior=False,
    ):
        super().__init__(
            n_components=n_components,
            prior_components=prior_components,
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            init=init,
            shrinkage=shrinkage,
            decoder_variance=decoder_variance,
            min_variance=min_variance,
            beta=beta,
            kl_warmup=kl_warmup,
            standardize=standardize,
            batch_size=batch_size,
            max_iter=max_iter,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            alpha=alpha,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            n_importance_samples=n_importance_samples,
            device=device,
            random_state=random_state,
            verbose=verbose,
            warm_start=warm_start,
        )
        self.missing_values = missing_values
        self.add_indicator = add_indicator
        self.sample_posterior = sample_posterior

    def _set_state(self, state, stacklevel):
        # Pickled before missing_values existed: NaN, as then. A file of
        # skvae.save has set the parameters already and holds attributes only.
        if "missing_values" not in vars(self):
            state = {"missing_values": np.nan, **state}
        super()._set_state(state, stacklevel + 1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._placeholder_is_nan()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _placeholder_is_nan(self):
        value = self.missing_values  # tags may be asked for before validation
        return value is None or (isinstance(value, Real) and bool(np.isnan(value)))

    def _mark_missing(self, X):
        """X with its ``missing_values`` placeholders replaced by NaN."""
        if self._placeholder_is_nan():
            return X
        if np.isnan(X).any():
            raise ValueError(
                f"Input X contains NaN, but missing_values={self.missing_values!r} "
                "marks the missing entries. Pass missing_values=np.nan if NaN "
                "marks them, or remove the NaN."
            )
        return np.where(X == self.missing_values, np.nan, X)

    def _fit_validated(self, X, incremental):
        converged = super()._fit_validated(X, incremental)
        # Fitted with the model by fit, on the first call only by partial_fit.
        if not incremental or not hasattr(self, "indicator_"):
            self.indicator_ = None
            if self.add_indicator:
                self.indicator_ = MissingIndicator(error_on_new=False).fit(X)
        return converged

    def transform(self, X):
        """Fill the missing entries of X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data; NaN (or ``missing_values``) marks a missing entry.

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features) or \
                (n_samples, n_features + n_indicator_features)
            X with each missing entry replaced by its conditional expectation
            given the observed entries of its row (its conditional median
            with Gaussianized features; see the class description), or a
            draw (with ``sample_posterior=True``), followed by the missing
            indicator with ``add_indicator=True``; float32 for float32 X,
            float64 otherwise.
        """
        X = self._validated(X)
        self._check_indicator()
        missing = np.isnan(X)
        # In X's dtype (float32 or float64), as SimpleImputer returns it.
        X_imputed = X.copy()
        if missing.any():
            filled = self._unstandardize(self._impute(X))[missing]
            largest = np.finfo(X.dtype).max
            if X.dtype != np.float64 and np.abs(filled).max() > largest:
                raise ValueError(
                    f"Imputed values reach {np.abs(filled).max():.3g}, past the "
                    f"largest {X.dtype} ({largest:.3g}): pass X as float64."
                )
            X_imputed[missing] = filled
        if self.add_indicator:
            indicator = self.indicator_.transform(X)
            X_imputed = np.hstack([X_imputed, indicator.astype(X.dtype)])
        return X_imputed

    def _check_indicator(self):
        """Raise if ``add_indicator`` was set after a fit without it."""
        if self.add_indicator and self.indicator_ is None:
            raise ValueError(
                "add_indicator=True, but the imputer was fitted with "
                "add_indicator=False: the indicator is fitted by fit. Call fit "
                "again."
            )

    def _impute(self, X):
        """Conditional means or draws in standardized units, one row of X each."""
        eps = self._importance_draws()
        if not self.sample_posterior:
            return self._map_rows(X, *conditional_mean_fn(self.module_, eps))
        rng = check_random_state(self.random_state)
        uniform = rng.uniform(size=X.shape[0])
        noise = rng.standard_normal(size=X.shape)
        return self._map_rows(
            X,
            *conditional_draw_fn(self.module_, eps),
            extra=(uniform, noise),
        )

    def get_feature_names_out(self, input_features=None):
        """Get output feature names for transformation.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Input features; see
            :meth:`sklearn.base.OneToOneFeatureMixin.get_feature_names_out`.

        Returns
        -------
        feature_names_out : ndarray of str objects
            The input feature names, followed by the names of the indicator
            columns with ``add_indicator=True``.
        """
        names = super().get_feature_names_out(input_features)
        if not self.add_indicator:
            return names
        self._check_indicator()
        return np.concatenate([names, self.indicator_.get_feature_names_out(names)])
