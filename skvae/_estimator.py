"""GaussianVAE: the scikit-learn face of the Gaussian variational autoencoder."""

from numbers import Integral

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted

from ._base import BaseGaussianVAE
from ._device import draw_seed, make_generator
from ._inference import inference_module, map_rows, posterior_mean_fn


class GaussianVAE(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseGaussianVAE):
    """Variational autoencoder with a Gaussian decoder, for real-valued data.

    The encoder gives q(z|x) = N(m(x), diag s(x)^2) and the decoder
    p(x|z) = N(mu(z), diag sigma^2), with the prior p(z) = N(0, I). Training
    maximises the evidence lower bound (ELBO)::

        E_q[log p(x|z)] - beta * KL(q(z|x) || p(z))

    with nothing else in the loss: no reconstruction weight to tune. The decoder
    variance balances the two terms by itself; by default it is set at each step
    to its closed-form optimum, one value per feature. Data in any units are
    accepted: the model works on standardized data internally, and every output
    (``inverse_transform``, ``sample``, ``score_samples``) is in the units of X,
    densities included.

    Missing entries (NaN) are accepted wherever X is. Training then maximises
    the ELBO of the observed entries only, with the encoder also seeing the
    missingness mask, and :meth:`score_samples` gives the log-likelihood of
    each row's observed entries, the missing ones marginalised out exactly
    (the decoder's covariance is diagonal). Infinite values are an error, and
    so is a feature with no observed value in the training data. See
    :class:`skvae.VAEImputer` to fill the missing entries in.

    Parameters
    ----------
    n_components : int or None, default=None
        Dimension of the latent space; None gives one latent dimension per
        feature, as :class:`~sklearn.decomposition.PCA` keeps all components.
        More than one per feature needs ``init="random"``: the linear start
        has at most as many.

    prior_components : int or "auto", default="auto"
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

    hidden_layer_sizes : array-like of int or int, default=(64, 64)
        Hidden layer widths of the encoder; the decoder mirrors them. One int
        is one hidden layer, as in :class:`~sklearn.neural_network.MLPRegressor`.
        An empty tuple gives a linear encoder and decoder (a linear VAE, whose
        maximum likelihood solution is probabilistic PCA or factor analysis).

    activation : {"identity", "logistic", "tanh", "relu"}, default="tanh"
        Activation of the hidden layers.

    init : {"auto", "linear", "random"}, default="auto"
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

    min_variance : float, default=1e-8
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

    standardize : bool or {"marginal", "auto"}, default="auto"
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

    max_iter : int, default=500
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

    early_stopping : bool or "auto", default="auto"
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

    n_features_in_ : int
        Number of features seen during :term:`fit`.

    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Names of features seen during :term:`fit`. Defined only when `X`
        has feature names that are all strings.

    See Also
    --------
    sklearn.decomposition.PCA : Linear model; ``score_samples`` is probabilistic
        PCA's log-likelihood.
    sklearn.decomposition.FactorAnalysis : Linear Gaussian model with one noise
        variance per feature.
    sklearn.mixture.GaussianMixture : Density model from a mixture of Gaussians.

    References
    ----------
    Kingma, D. P. and Welling, M. (2014). Auto-encoding variational Bayes. ICLR.

    Burda, Y., Grosse, R. and Salakhutdinov, R. (2016). Importance weighted
    autoencoders. ICLR.

    Rybkin, O., Daniilidis, K. and Levine, S. (2021). Simple and effective VAE
    training with calibrated decoders. ICML.

    Detlefsen, N. S., Jorgensen, M. and Hauberg, S. (2019). Reliable training
    and estimation of variance networks. NeurIPS.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from skvae import GaussianVAE
    >>> X, _ = load_diabetes(return_X_y=True, scaled=False)
    >>> vae = GaussianVAE(n_components=2, max_iter=20, random_state=0).fit(X)
    >>> vae.transform(X[:3]).shape
    (3, 2)
    >>> vae.inverse_transform(vae.transform(X[:3])).shape
    (3, 10)
    >>> vae.score_samples(X[:3]).shape
    (3,)
    """

    def __init__(
        self,
        n_components=None,
        *,
        prior_components="auto",
        hidden_layer_sizes=(64, 64),
        activation="tanh",
        init="auto",
        shrinkage="auto",
        decoder_variance="feature",
        min_variance=1e-8,
        beta=1.0,
        kl_warmup=0,
        standardize="auto",
        batch_size="auto",
        max_iter=500,
        learning_rate="adaptive",
        learning_rate_init=1e-3,
        alpha=0.0,
        early_stopping="auto",
        validation_fraction=0.1,
        n_iter_no_change=10,
        tol=1e-4,
        n_importance_samples=64,
        device="auto",
        random_state=None,
        verbose=0,
        warm_start=False,
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # A density estimator, as GaussianMixture is; DensityMixin would set
        # this too, with a no-op score that would come before ours.
        tags.estimator_type = "density_estimator"
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    @property
    def _n_features_out(self):
        """Number of output features, for ``get_feature_names_out``."""
        return self.n_components_

    def fit_transform(self, X, y=None):
        """Fit the model to X and return the posterior means.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        Z : ndarray of shape (n_samples, ``n_components_``)
            Posterior mean of each row's latent code (see :meth:`transform`).

        Examples
        --------
        >>> import numpy as np
        >>> from skvae import GaussianVAE
        >>> X = np.random.default_rng(0).normal(size=(100, 3))
        >>> GaussianVAE(max_iter=5, random_state=0).fit_transform(X).shape
        (100, 3)
        """
        return self.fit(X).transform(X)

    def transform(self, X):
        """Posterior mean of the latent code of each row.

        Deterministic: the mean of the posterior, not a random draw from it.
        Where the decoder is linear (no hidden layers, or a kept linear
        start) and its variance does not depend on z, the model is a Gaussian
        or a Gaussian mixture and this is the exact posterior mean
        E[z | x], computed in float64 (on MPS, which has none, on the CPU).
        Otherwise it is the mean of the encoder's q(z|x), the amortized
        approximation training fits.

        Missing entries (NaN) are left out: the exact posterior mean is then
        E[z | x_o] given the observed entries alone; the encoder sees the
        observed entries (and the missingness mask, if the model was trained
        on data with NaN; otherwise it sees the missing entries at the
        feature means). A row with no observed entry gets the mean of the
        prior, which is then the exact posterior mean.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data; NaN marks a missing entry.

        Returns
        -------
        Z : ndarray of shape (n_samples, ``n_components_``)
            Posterior means; float32 for float32 X, float64 otherwise.

        Examples
        --------
        >>> import numpy as np
        >>> from skvae import GaussianVAE
        >>> X = np.random.default_rng(0).normal(size=(100, 3))
        >>> vae = GaussianVAE(max_iter=5, random_state=0).fit(X)
        >>> Z = vae.transform(X[:4])
        >>> Z.shape, bool((Z == vae.transform(X[:4])).all())
        ((4, 3), True)

        With a missing entry, the code is the posterior mean given the others:

        >>> X_missing = X[:4].copy()
        >>> X_missing[0, 1] = np.nan
        >>> bool(np.isfinite(vae.transform(X_missing)).all())
        True
        """
        X = self._validated(X)
        Z = self._map_rows(X, *posterior_mean_fn(self.module_))
        empty = np.isnan(X).all(1)
        if empty.any():
            with torch.no_grad():
                log_weights, means, _ = self.module_.prior_mixture()
                prior_mean = torch.exp(log_weights) @ means
            Z[empty] = prior_mean.cpu().double().numpy()
        # In X's dtype, as PCA returns it: computed in float64 either way.
        return Z.astype(X.dtype, copy=False)

    def inverse_transform(self, X):
        """Decoder mean of each latent code, in the units of the training data.

        Parameters
        ----------
        X : array-like of shape (n_samples, ``n_components_``)
            Latent codes, e.g. from :meth:`transform`.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
            The mean of p(x|z) for each code; with Gaussianized features
            (``marginal_knots_``), the decoder mean in internal units mapped
            back to the units of X, which is the median of p(x|z) there.

        Examples
        --------
        >>> import numpy as np
        >>> from skvae import GaussianVAE
        >>> X = np.random.default_rng(0).normal(size=(100, 3)) + 1000.0
        >>> vae = GaussianVAE(max_iter=5, random_state=0).fit(X)
        >>> X_hat = vae.inverse_transform(vae.transform(X[:4]))
        >>> X_hat.shape, bool(np.all(np.abs(X_hat - 1000.0) < 10.0))
        ((4, 3), True)
        """
        check_is_fitted(self)
        Z = check_array(X, dtype=[np.float64, np.float32])
        n_components = self.n_components_
        if Z.shape[1] != n_components:
            raise ValueError(
                f"X has {Z.shape[1]} features, but inverse_transform expects "
                f"{n_components} (n_components_)."
            )
        mean = map_rows(
            self.module_,
            Z,
            lambda module, z, _: module.decode(z)[0],
            device=self.device_,
            width=self.module_.widest_layer,
        )
        return self._unstandardize(mean)

    @torch.no_grad()
    def sample(self, n_samples=1, random_state=None):
        """Draw rows from the fitted model, decoder noise included.

        z is drawn from the prior p(z) (N(0, I), or the mixture prior), then x
        from p(x|z).

        Parameters
        ----------
        n_samples : int, default=1
            Number of rows to draw.
        random_state : int, RandomState instance or None, default=None
            Seeds the draws. None uses the estimator's ``random_state``, so a
            seeded estimator draws the same rows each time, as
            :meth:`sklearn.mixture.GaussianMixture.sample` does.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            Draws, in the units of the training data.

        Examples
        --------
        >>> import numpy as np
        >>> from skvae import GaussianVAE
        >>> X = np.random.default_rng(0).normal(size=(100, 3))
        >>> vae = GaussianVAE(max_iter=5, random_state=0).fit(X)
        >>> vae.sample(5).shape
        (5, 3)
        >>> bool((vae.sample(5) == vae.sample(5)).all())  # seeded by random_state
        True
        >>> bool((vae.sample(5, random_state=1) == vae.sample(5)).all())
        False
        """
        check_is_fitted(self)
        if not isinstance(n_samples, Integral) or isinstance(
            n_samples, (bool, np.bool_)
        ):
            raise TypeError(
                f"n_samples must be an integer, got {n_samples!r} of type "
                f"{type(n_samples).__name__}."
            )
        if n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r}. The sampling "
                "requires at least one sample."
            )
        rng = check_random_state(
            self.random_state if random_state is None else random_state
        )
        generator = make_generator(draw_seed(rng), torch.device("cpu"))
        module = inference_module(self.module_, self.device_)
        dtype = next(module.parameters()).dtype
        shape = (int(n_samples), module.n_components + module.n_features)
        draws = torch.randn(
            shape, generator=generator, dtype=torch.float64, device="cpu"
        )
        draws = draws.to(device=self.device_, dtype=dtype)
        normal, noise = draws.split([module.n_components, module.n_features], dim=1)
        uniform = None
        if module.prior_components > 1:  # which component each draw comes from
            uniform = torch.rand(
                n_samples, generator=generator, dtype=torch.float64, device="cpu"
            )
            uniform = uniform.to(device=self.device_, dtype=dtype)
        z = module.sample_prior(normal, uniform)
        X = module.sample(z, noise).cpu().numpy().astype(np.float64)
        return self._unstandardize(X)
