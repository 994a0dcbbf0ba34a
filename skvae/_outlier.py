"""VAEOutlierDetector: rows the fitted density finds unlikely are outliers."""

import math
import warnings
from numbers import Real

import numpy as np
import torch
from sklearn.base import OutlierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._base import BaseGaussianVAE
from ._incomplete import observed_mahalanobis, tail_equivalent_distance
from ._inference import inference_module
from ._likelihood import LOG_2PI
from ._linear_start import resolution_variance
from ._units import log_jacobian, standardize_into

# Tukey's fence: rows more than this many interquartile ranges below the lower
# quartile of the training scores are outliers under contamination="auto".
# Chosen by leaving one data set out among 1.5 to 6 (docs/guide).
TUKEY_FENCE = 4.0
# Support steps after the fit on all rows: each drops the least likely rows
# under the current model and trains on the rest (a C-step of FAST-MCD), until
# the rows kept no longer change, at most this many times. On the benchmark
# data sets, ranking improved up to about ten; several had not converged after three.
MAX_SUPPORT_STEPS = 10
# The linear start's variance of each feature is at least this fraction of
# the variance of a rounding error on the feature's grid of values
# (resolution_variance): for counts, codes and binary flags, a feature that is
# (nearly) constant on the support rows then cannot make every other value
# look impossible. Chosen by leaving one data set out (docs/guide).
RESOLUTION_FRACTION = 1 / 16
# partial_fit sets offset_ on a uniform sample of at most this many of the
# rows it has been given since the last fit (reservoir_sample), scored by the
# current model, so that a small last chunk does not set the threshold alone.
THRESHOLD_ROWS = 1000


def reservoir_sample(sample, n_seen, X, size, rng):
    """A uniform sample of at most ``size`` rows, updated with the rows of X.

    Vitter's algorithm R: ``sample`` is a uniform sample of the ``n_seen``
    rows given before (None for none); row t of the stream (from 1), past
    the first ``size``, replaces a random row of the sample with probability
    ``size / t``, so that every row seen is in the result with the same
    probability, whatever the chunks.
    """
    sample = X[:0] if sample is None else sample
    fill = min(size - len(sample), len(X))
    sample = np.concatenate([sample, X[:fill]])
    rows = np.arange(fill, len(X))
    if rows.size:
        slots = rng.integers(0, n_seen + rows + 1)  # uniform on [0, t - 1]
        kept = slots < size
        rows, slots = rows[kept], slots[kept]
        # A slot drawn twice holds the later of its rows.
        _, last = np.unique(slots[::-1], return_index=True)
        last = len(slots) - 1 - last
        sample[slots[last]] = X[rows[last]]
    return sample


def c_step(X, n_support, score_samples, fit, n_steps):
    """Concentration steps: refit on the rows the current model finds most likely.

    Each step scores every row of X with ``score_samples`` (higher is more
    likely), keeps the ``n_support`` highest (ties broken by row order) and
    calls ``fit`` on them, until those rows are the ones the model was last
    fitted on (the steps have converged) or ``n_steps`` fits have run. For
    a Gaussian this is the C-step of FAST-MCD (Rousseeuw and Van Driessen
    1999), which never increases the determinant of the support's
    covariance; for any density model fitted by maximum likelihood it is
    trimmed maximum likelihood.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    n_support : int
        Rows kept at each step.
    score_samples : callable
        Maps X to the log-likelihood of each row under the current model.
    fit : callable
        Trains the model further on the rows it is given; returns whether
        that training converged.
    n_steps : int
        Most steps.

    Returns
    -------
    support : ndarray of shape (n_samples,) of bool
        The rows of the last step (all rows when ``n_steps`` is 0).
    converged : bool or None
        What the last ``fit`` returned (None when ``n_steps`` is 0).
    """
    support = np.ones(X.shape[0], dtype=bool)
    converged = None
    for step in range(n_steps):
        most_likely = _most_likely(score_samples(X), n_support)
        if step > 0 and np.array_equal(most_likely, support):
            break
        support = most_likely
        converged = fit(X[support])
    return support, converged


def _most_likely(scores, n_support):
    """Mask of the ``n_support`` rows with the highest scores."""
    support = np.zeros(scores.shape[0], dtype=bool)
    support[np.argsort(-scores, kind="stable")[:n_support]] = True
    return support


class VAEOutlierDetector(OutlierMixin, BaseGaussianVAE):
    """Unsupervised outlier detection with a Gaussian variational autoencoder.

    Fits the same model as :class:`GaussianVAE` and ranks rows by their
    log-likelihood under it: :meth:`score_samples` is log p(x) in the units
    of X (higher is more normal; for rows with missing entries, see there)
    and rows below a threshold ``offset_`` are outliers. As for
    :class:`~sklearn.ensemble.IsolationForest`, the training data may
    contain outliers; no labels are used.

    Read more in the user guide: :doc:`/guide/outlier_detection`.

    Parameters
    ----------
    n_components : int or None, default=None
        Dimension of the latent space; None gives one latent dimension per
        feature, as :class:`~sklearn.decomposition.PCA` keeps all components.
        More than one per feature needs ``init="random"``: the linear start
        has at most as many.

        The default, None, with the default linear decoder makes the model a
        Gaussian with a full covariance matrix (factor analysis with as many
        factors as features), which ranked anomalies best on the benchmark
        data sets; see ``hidden_layer_sizes`` and
        :doc:`/guide/outlier_detection`. With as many latent dimensions as
        support rows (see ``support_fraction``) or more, such as on data with
        more features than rows, the fit warns: new rows of the training
        distribution then score below the training rows and are flagged
        (all of them on 30 rows of 200 features); pass a much smaller
        ``n_components``, or ``shrinkage=1`` (a diagonal covariance).

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

        The default, no hidden layer, makes the density a Gaussian, fitted
        in closed form (see ``init``) and robustly (see ``support_fraction``
        and ``shrinkage``): no epoch runs. It ranked anomalies better than
        networks with hidden layers on the 20 benchmark data sets, and than
        choosing between the two by held-out likelihood: the outliers are in
        the training data, and a more flexible model learns to give them
        density too. Give hidden layers, e.g. ``(64, 64)`` with
        ``init="auto"`` and ``early_stopping="auto"``, where the normal rows
        lie on a curved manifold that a Gaussian cannot follow. The
        measurements are in :doc:`/guide/outlier_detection`.

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

    shrinkage : float in [0, 1] or "auto", default=0.2
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

        The default, 0.2, ranked anomalies best by average rank over the 20
        benchmark data sets; chosen so on all but the one left out, in turn,
        the settings score within 0.007 of the in-sample mean (see
        :doc:`/guide/outlier_detection`). Fitted to the central rows
        only (see ``support_fraction``), a covariance underestimates the
        spread of normal rows in the directions of weak correlation, and
        shrinking the correlations corrects that.

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

        The detector's linear start (the whole fit, for the default model)
        also floors each feature's variance, in the model's internal units,
        at a sixteenth of that of a rounding error on the feature's grid of
        values: ``g ** 2 / 192``, with ``g`` the smallest gap between its
        distinct values there. For counts, codes and binary flags, a feature
        that is constant (or nearly) on the support rows (see
        ``support_fraction``) would otherwise make every other value of it
        the least likely thing in the data, ahead of rows far out in other
        features; with the floor such rows still score low, but below
        those. For continuous features the gaps, and the floor, are
        negligible. The floor applies to the start under the N(0, I) prior
        (``prior_components=1``) and standardized or raw features, not to
        a mixture prior's components, Gaussianized features
        (``standardize="marginal"``) or ``init="random"``; a network trains
        on from it with ``min_variance`` as its only floor. The fraction was
        chosen by leaving one data set out (:doc:`/guide/outlier_detection`).

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

    contamination : "auto" or float, default="auto"
        How the threshold ``offset_`` is set.

        - float in (0, 0.5]: the expected proportion of outliers in the
          training data. ``offset_`` is that percentile of the training scores,
          so this fraction of the training rows is flagged, as in
          :class:`~sklearn.ensemble.IsolationForest` and
          :class:`~sklearn.covariance.EllipticEnvelope`.
        - ``"auto"``: a fence on the training scores in the manner of
          Tukey's (1977) boxplot rule, ``offset_ = Q1 - 4 * (Q3 - Q1)``, with
          Q1 and Q3 the quartiles of :meth:`score_samples` over the training
          rows. The number of rows flagged then follows the data rather than
          a guess of it, and the quartiles are not moved by a minority of
          outliers. The factor 4 (Tukey's is 1.5) was chosen by leaving one
          data set out: on the benchmark data sets with fewer than 10 %
          anomalies it flagged between half and twice their number on 5 of 7,
          and at most 0.5 % of the rows of clean Gaussian data (2,000 rows
          of 2 to 30 correlated features), where 1.5 flagged up to 5.7 %.
          Small samples see more flagged: over 20 seeds, 1 % on average
          and up to 4 % (2 features) or 6 % (10) of 50 rows, up to 2 % of
          200 rows.
          IsolationForest's ``-0.5`` and LocalOutlierFactor's ``-1.5`` are
          fixed thresholds on scores with a fixed range; a log-density has
          none (it shifts by ``-D log c`` when X is scaled by c), so its
          reference has to come from a score distribution. The quantile of the
          scores of rows drawn from the fitted model was tried and rejected:
          a VAE's prior puts mass where the data have none, so its own draws
          are less likely than the data and that threshold flagged nothing.

    support_fraction : float in (0, 1], default=0.75
        Proportion of the training rows the final model is fitted on. After a
        fit on all rows, the ``1 - support_fraction`` least likely rows under
        the model are set aside and the model is fitted to the others (in
        closed form for the default Gaussian; a network continues training);
        this step is repeated, each ranking the rows under the model of the
        step before, until the rows kept no longer change, at most ten times
        (the C-step of
        :class:`~sklearn.covariance.MinCovDet`, applied to a VAE: trimmed
        maximum likelihood). The outliers in the
        training data then no longer pull the model, in particular the decoder
        variance, towards themselves, so they stand out further. On the
        benchmark data sets this raised average precision most where the
        anomalies are rare and extreme, and cost some ranking quality where
        the "anomalies" are a large share of the rows and not extreme; the
        measurements are in :doc:`/guide/outlier_detection`. ``1.0`` fits
        once, on all rows. It does not change which fraction of rows
        :meth:`predict` flags; ``contamination`` does. With
        :meth:`partial_fit`, each chunk after the first trains on its
        ``support_fraction`` most likely rows.

    Attributes
    ----------
    offset_ : float
        Threshold on :meth:`score_samples`: ``decision_function`` is
        ``score_samples - offset_``, negative for outliers. :meth:`fit` sets
        it on the scores of all its rows, and keeps none of them. Each
        :meth:`partial_fit` sets it on the scores, under the updated model,
        of a uniform sample of at most 1,000 of the rows given to
        :meth:`partial_fit` since the last :meth:`fit` (the sample is kept
        with the model, and scoring it costs each call up to 1,000 rows'
        scores), averaged with the last :meth:`fit`'s threshold, if any,
        weighted by their numbers of rows: a small chunk moves it little.

    support_ : ndarray of shape (n_samples,) of bool
        The training rows of the last fit (or of the last chunk given to
        :meth:`partial_fit`) that the model was trained on at the end.

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

        A fit counts the epochs of its fit on all rows and of each support
        step.

    loss_curve_ : list of float
        Training objective after each epoch, one entry per epoch of
        ``n_iter_``: the negative ELBO of the observed entries, per row, in
        the units of X (of the rows that epoch trained on: a later
        :meth:`partial_fit` chunk does not move it).

        A fit's entries are those over all rows, then those over each support
        step's rows.

    best_loss_ : float or None
        Lowest training loss (as in ``loss_curve_``) since the stopping rule
        last started afresh, at the start of a :meth:`fit`; None with early
        stopping, or after a :meth:`fit` in closed form.

        Each support step starts the stopping rule afresh, so after a fit
        this is the lowest loss of the last step.

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
    GaussianVAE : The same model as a transformer and density estimator.
    sklearn.ensemble.IsolationForest : Outlier detection with random trees.
    sklearn.covariance.EllipticEnvelope : Outlier detection with one Gaussian.
    sklearn.neighbors.LocalOutlierFactor : Outlier detection by local density.

    Notes
    -----
    The score is log p(x): exact for the default model, a Gaussian, and the
    importance-weighted (IWAE) estimate for a network (a Gaussian scores
    rows with missing entries by their tail: see :meth:`score_samples`). On
    the benchmark data sets it ranked anomalies best, or within 0.011 of the
    best, against the ELBO, An and Cho's reconstruction probability
    E_q[log p(x|z)] and the reconstruction error; see
    :doc:`/guide/outlier_detection`. Unlike those,
    it is a density, in the units of X, so it can be compared with
    :meth:`sklearn.mixture.GaussianMixture.score_samples`. After the support
    steps it is the density of a model fitted to the most likely
    ``support_fraction`` of the rows, narrower than a fit to all rows: use
    :class:`GaussianVAE` to estimate a density, this class to rank rows.

    References
    ----------
    An, J. and Cho, S. (2015). Variational autoencoder based anomaly detection
    using reconstruction probability. SNU Data Mining Center, Special Lecture
    on IE 2(1).

    Burda, Y., Grosse, R. and Salakhutdinov, R. (2016). Importance weighted
    autoencoders. ICLR.

    Rousseeuw, P. J. and Van Driessen, K. (1999). A fast algorithm for the
    minimum covariance determinant estimator. Technometrics 41(3), 212-223.

    Tukey, J. W. (1977). Exploratory data analysis. Addison-Wesley.

    Liu, F. T., Ting, K. M. and Zhou, Z.-H. (2008). Isolation forest. ICDM.

    Examples
    --------
    >>> import numpy as np
    >>> from skvae import VAEOutlierDetector
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 3))
    >>> X[:3] += 8  # three planted outliers
    >>> detector = VAEOutlierDetector(contamination=0.01, random_state=0)
    >>> labels = detector.fit_predict(X)
    >>> labels[:3]
    array([-1, -1, -1])
    >>> int((labels == -1).sum())
    3
    >>> bool(detector.decision_function(X[:1])[0] < 0)
    True
    >>> detector.n_iter_  # a Gaussian, fitted in closed form
    0
    """

    _parameter_constraints: dict = {
        **BaseGaussianVAE._parameter_constraints,
        "contamination": [
            StrOptions({"auto"}),
            Interval(Real, 0, 0.5, closed="right"),
        ],
        "support_fraction": [Interval(Real, 0, 1, closed="right")],
    }

    def __init__(
        self,
        n_components=None,
        *,
        prior_components=1,
        hidden_layer_sizes=(),
        activation="relu",
        init="linear",
        shrinkage=0.2,
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
        contamination="auto",
        support_fraction=0.75,
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
        self.contamination = contamination
        self.support_fraction = support_fraction

    def _start_variance_floor(self, X):
        # With the default linear start, a floor from the data's resolution.
        return RESOLUTION_FRACTION * resolution_variance((X - self.mean_) / self.scale_)

    def _outlier_scores(self, X):
        """:meth:`score_samples` of validated X: log p(x), incomplete rows made comparable.

        Where the model is a Gaussian (:meth:`_marginal_gaussian`), a row
        with missing entries gets the log-density of a complete row whose
        squared Mahalanobis distance has the same tail probability as its
        observed entries' (:func:`~skvae._incomplete.tail_equivalent_distance`),
        with the Jacobian of the row completed by the conditional means.
        """
        incomplete = np.isnan(X).any(1)
        gaussian = self._marginal_gaussian()
        if not incomplete.any() or gaussian is None:
            return self._log_likelihood(X)
        scores = np.empty(X.shape[0])
        scores[incomplete] = self._tail_equivalent_scores(X[incomplete], *gaussian)
        if not incomplete.all():
            scores[~incomplete] = self._log_likelihood(X[~incomplete])
        return scores

    def _marginal_gaussian(self):
        """Mean and covariance of p(x) in internal units (float64), or None.

        p(x) is a Gaussian where the decoder is linear and the prior is
        N(0, I): ``N(c, A A^T + diag(variance))``.
        """
        module = self.module_
        if not module.has_linear_decoder or module.prior_components > 1:
            return None
        # In float64 on the CPU, from the float32 weights (exact in float64).
        module = inference_module(module, torch.device("cpu"))
        with torch.no_grad():
            return tuple(t.numpy() for t in module.marginal_gaussian())

    def _tail_equivalent_scores(self, X, mean, covariance):
        """The log-density of complete rows as far out as the rows of X (with NaN)."""
        Z = np.empty(X.shape)
        standardize_into(Z, X, self.mean_, self.scale_, knots=self.marginal_knots_)
        Z[np.isnan(X)] = np.nan
        distance, filled, log_det = observed_mahalanobis(Z, mean, covariance)
        n_features = X.shape[1]
        equivalent = tail_equivalent_distance(
            distance, (~np.isnan(X)).sum(1), n_features
        )
        log_px = -0.5 * (equivalent + log_det + n_features * LOG_2PI)
        if self.marginal_knots_ is None:
            return log_px - log_jacobian(self.scale_)
        missing = np.isnan(X)
        completed = np.where(missing, self._unstandardize(filled), X)
        return log_px - self._log_jacobian_rows(completed)

    def _fit_validated(self, X, incremental):
        n_support = max(1, math.ceil(self.support_fraction * X.shape[0]))
        trimmed = self.support_fraction < 1
        if incremental:
            # One epoch on this chunk's most likely rows under the model so far
            # (all rows of the first chunk, which initializes the model).
            support, rows = np.ones(X.shape[0], dtype=bool), X
            if trimmed and not getattr(self, "_first_chunk", False):
                support = _most_likely(self._outlier_scores(X), n_support)
                rows = X[support]
            converged = self._train_on(rows, incremental)
        else:
            converged = self._train_on(X, incremental)
            support, last = c_step(
                X,
                n_support,
                self._outlier_scores,
                lambda rows: self._train_on(rows, incremental),
                MAX_SUPPORT_STEPS if trimmed else 0,
            )
            converged = converged if last is None else last
            self._warn_if_fewer_rows_than_dimensions(int(support.sum()))
        # The caller of (partial_)fit, past the warning's method, this one,
        # _fit and its two torch mode decorators, (partial_)fit and
        # _fit_context.
        method = "partial_fit" if incremental else "fit"
        self._warn_if_incomplete_rows_do_not_compare(X, method, stacklevel=8)
        self._set_threshold(X, incremental)  # reads the last call's support_
        self.support_ = support
        return converged

    def _threshold(self, scores):
        """``offset_`` for these training scores, as ``contamination`` says."""
        if self.contamination == "auto":
            lower, upper = np.percentile(scores, [25.0, 75.0])
            return float(lower - TUKEY_FENCE * (upper - lower))
        return float(np.percentile(scores, 100.0 * self.contamination))

    def _set_threshold(self, X, incremental):
        """Set ``offset_`` on the training rows of X, and of earlier chunks.

        ``fit`` sets it on the scores of all its rows, and keeps none of
        them. Each ``partial_fit`` scores, with the updated model, a uniform
        sample of at most ``THRESHOLD_ROWS`` of the rows given to
        ``partial_fit`` since the last ``fit`` (:func:`reservoir_sample`);
        after a ``fit``, that threshold is averaged with the fit's, weighted
        by their numbers of rows (the threshold is linear in the quantiles
        of the scores it is set on), so that a small chunk moves it little.
        A fit's threshold set under another ``contamination`` (changed by
        ``set_params`` since) is not one of this ``contamination``'s: the
        sample alone sets it then.
        """
        if not incremental:
            self.offset_ = self._threshold(self._outlier_scores(X))
            self._fit_offset, self._fit_rows = self.offset_, X.shape[0]
            self._fit_contamination = self.contamination
            self._threshold_rows, self._threshold_seen = None, 0
            return
        if not hasattr(self, "_threshold_seen"):
            # The first partial_fit, or a model fitted before these were kept,
            # whose last fit (or chunk) set offset_ on len(support_) rows.
            fitted = hasattr(self, "offset_")
            self._fit_offset = self.offset_ if fitted else None
            self._fit_rows = len(self.support_) if fitted else 0
            self._fit_contamination = self.contamination
            self._threshold_rows, self._threshold_seen = None, 0
        n_seen = self._threshold_seen
        rng = np.random.default_rng([self._score_seed, n_seen])
        self._threshold_rows = reservoir_sample(
            self._threshold_rows, n_seen, X, THRESHOLD_ROWS, rng
        )
        self._threshold_seen = n_seen = n_seen + X.shape[0]
        offset = self._threshold(self._outlier_scores(self._threshold_rows))
        fit_contamination = getattr(self, "_fit_contamination", self.contamination)
        fit_rows = self._fit_rows if fit_contamination == self.contamination else 0
        if fit_rows:
            offset = (fit_rows * self._fit_offset + n_seen * offset) / (
                fit_rows + n_seen
            )
        self.offset_ = float(offset)

    def _warn_if_incomplete_rows_do_not_compare(self, X, method, stacklevel):
        """Warn where rows with missing entries are ranked by log p(x_o).

        Only a Gaussian model (:meth:`_marginal_gaussian`) scores them on the
        scale of complete rows (:meth:`score_samples`); under any other, their
        scores, their labels and, in ``fit``, the support steps and
        ``offset_`` move with the units of the entries they lack.
        """
        incomplete = int(np.isnan(X).any(1).sum())
        if not incomplete or self._marginal_gaussian() is not None:
            return
        warnings.warn(
            f"{method} got {incomplete} row(s) with missing entries. This "
            "model is not a Gaussian (it has hidden layers or a mixture "
            "prior), so it scores them by the log-density of their observed "
            "entries, which does not compare with complete rows' scores nor "
            "with offset_, and moves with the units of the missing features. "
            "Impute them first (e.g. with skvae.VAEImputer), or use the "
            "default linear model, which ranks them on the scale of complete rows.",
            UserWarning,
            stacklevel=stacklevel,
        )

    def _warn_if_fewer_rows_than_dimensions(self, n_support):
        """Warn where the model has as many latent dimensions as support rows.

        Its covariance then fits those rows too closely: rows it was not
        fitted to score far below them, so that new rows of the same
        distribution are flagged (all of them on 30 rows of 200 features,
        also with shrinkage=0.9; 19 % with 0.99 and 4 % with 1, the diagonal,
        which is spared).
        """
        n_components = self.module_.n_components
        diagonal = self.init != "random" and self.shrinkage == 1
        if n_components < n_support or diagonal:
            return
        fewer = f"n_components well below {n_support}, " if n_support > 2 else ""
        warnings.warn(
            f"VAEOutlierDetector fitted {n_components} latent dimensions to "
            f"{n_support} support rows: rows it was not fitted to will score "
            "far below the training rows, and new rows of the same "
            f"distribution may all be flagged. Pass {fewer}shrinkage=1 (a "
            "diagonal covariance), or more rows.",
            UserWarning,
            # The caller of fit, past this method, _fit_validated, _fit and
            # its two torch mode decorators, fit and _fit_context.
            stacklevel=8,
        )

    def score_samples(self, X):
        """Log-likelihood of each row, in the units of X; the lower, the more abnormal.

        For a complete row, log p(x), as :meth:`GaussianVAE.score_samples`
        computes it (exactly for the default model, a Gaussian). A row with
        missing entries (NaN) must be ranked against the others, but the
        density of its observed entries, log p(x_o), is a density over fewer
        coordinates: higher or lower than a complete row's by the units of
        the entries it lacks, not by how abnormal it is. Where the model is
        a Gaussian (no hidden layers, or a kept linear start, and a single
        prior component), such a row scores instead as the complete row whose
        squared Mahalanobis distance from the mean has the same tail
        probability as that of its observed entries (chi-squared with as many
        degrees of freedom as entries; Wilson and Hilferty's 1931
        approximation maps one to the other), with its missing entries at
        their conditional means: a row as far out on the entries it has
        scores as low as a complete row as far out on all. A row with nothing
        observed scores as a complete row at the median distance. For other
        models, a row with missing entries scores log p(x_o) (0 with nothing
        observed), and rows with different missing entries do not compare:
        ``fit``, ``partial_fit``, ``fit_predict``, ``score_samples``,
        ``decision_function`` and ``predict`` then warn (impute such rows
        first, e.g. with :class:`~skvae.VAEImputer`).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data; NaN marks a missing entry.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            Log-likelihood of each row (for a row with missing entries, as
            above).

        Examples
        --------
        A row with one entry missing scores below a complete normal row when
        the entries it has are far out:

        >>> import numpy as np
        >>> from skvae import VAEOutlierDetector
        >>> X = np.random.default_rng(0).normal(size=(300, 4))
        >>> detector = VAEOutlierDetector().fit(X)
        >>> rows = np.array([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, np.nan]])
        >>> scores = detector.score_samples(rows)
        >>> bool(scores[1] < scores[0]), detector.predict(rows).tolist()
        (True, [1, -1])
        """
        return self._scores(X, "score_samples", stacklevel=4)

    def _scores(self, X, method, stacklevel):
        """:meth:`score_samples`, warning as
        :meth:`_warn_if_incomplete_rows_do_not_compare` does at ``stacklevel``
        (counted from that method)."""
        X = self._validated(X)
        self._warn_if_incomplete_rows_do_not_compare(X, method, stacklevel)
        return self._outlier_scores(X)

    def score(self, X, y=None):
        """Mean log-likelihood of the rows of X, in the units of X.

        Unlike :meth:`score_samples`, which ranks rows with missing entries
        against complete ones, the log-density of each row's observed
        entries, log p(x_o), as :meth:`GaussianVAE.score` averages it: a
        likelihood to compare models by, as
        :class:`~sklearn.model_selection.GridSearchCV` does.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data; NaN marks a missing entry.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        log_likelihood : float
            Mean log-density of the rows' observed entries.

        Examples
        --------
        >>> import numpy as np
        >>> from skvae import VAEOutlierDetector
        >>> X = np.random.default_rng(0).normal(size=(300, 4))
        >>> detector = VAEOutlierDetector().fit(X)
        >>> bool(np.isclose(detector.score(X), detector.score_samples(X).mean()))
        True
        """
        return float(np.mean(self._log_likelihood(self._validated(X))))

    def decision_function(self, X):
        """Log-likelihood of each row minus the threshold: negative for outliers.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
            ``score_samples(X) - offset_``; the lower, the more abnormal.
        """
        check_is_fitted(self)
        return self._scores(X, "decision_function", stacklevel=4) - self.offset_

    def fit_predict(self, X, y=None, **kwargs):
        """Fit on X and label its rows as inliers (+1) or outliers (-1).

        ``fit(X).predict(X)``, with one warning (where the model is not a
        Gaussian and rows have missing entries; see :meth:`score_samples`),
        not one from each.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data; NaN marks a missing entry.
        y : Ignored
            Not used, present for API consistency by convention.
        **kwargs : dict
            Passed to :meth:`fit`.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            -1 for the rows below ``offset_``, +1 for the others.

        Examples
        --------
        >>> import numpy as np
        >>> from skvae import VAEOutlierDetector
        >>> X = np.random.default_rng(0).normal(size=(200, 3))
        >>> X[0] = 8.0
        >>> VAEOutlierDetector().fit_predict(X)[:3].tolist()
        [-1, 1, 1]
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "fit got .* missing entries", UserWarning)
            self.fit(X, y, **kwargs)
        return self._labels(X, "fit_predict")

    def predict(self, X):
        """Label each row as an inlier (+1) or an outlier (-1).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
            -1 where :meth:`decision_function` is negative, +1 elsewhere.
        """
        return self._labels(X, "predict")

    def _labels(self, X, method):
        """-1 for the rows of X scoring below ``offset_``, +1 for the others."""
        # The warning's level: past _scores and this, ``method``'s caller.
        return np.where(self._scores(X, method, stacklevel=5) < self.offset_, -1, 1)
