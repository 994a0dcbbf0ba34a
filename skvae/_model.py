"""The torch module: encoder, decoder, ELBO terms and importance-weighted log p(x).

Everything here works in the model's internal units (standardized data when
the estimator standardizes) and on tensors only; numpy, pandas and
scikit-learn stay in the estimator.
"""

import torch
from torch import nn

from ._likelihood import (
    LOG_2PI,
    gaussian_log_prob,
    gaussian_log_prob_of_squares,
    kl_between_normals,
    kl_to_standard_normal,
    mixture_log_prob,
    optimal_variance,
    standard_normal_log_prob,
)

ACTIVATIONS = {
    "identity": nn.Identity,
    "logistic": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
}

# Elements per tensor when scoring or evaluating in chunks (rows x draws x
# width, with width from VAEModule.widest_layer or prior_width).
SCORE_CHUNK_ELEMENTS = 2**22
# The bound of scoring on the CPU, where the chunk's tensors add to the
# process's memory: float64 tensors of 4 MB, which also scored 1.25 to 1.7
# times as fast as 32 MB ones there (docs/guide/scaling.rst).
CPU_SCORE_CHUNK_ELEMENTS = 2**19
# Floor on the encoder's posterior scale: keeps log s finite in the KL term.
STD_FLOOR = 1e-4
# Encoder inputs are clipped to this magnitude. Importance sampling is exact
# for any proposal q(z|x), so clipping only what the encoder sees keeps rows far
# outside the training data finite without biasing their log-likelihood. The
# decoder clips its latent inputs likewise (the prior puts no mass that far),
# so that inverse_transform of absurd codes stays finite.
INPUT_CLIP = 1e6
# The parameters' dtype, whatever torch's default dtype is: training runs in
# float32, scoring on a float64 copy.
PARAMETER_DTYPE = torch.float32
# Bounds on the heteroscedastic head's log-variance, in internal units.
LOG_VARIANCE_BOUNDS = (-30.0, 20.0)


def _mlp(sizes, activation):
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=False):
        layers += [
            nn.Linear(n_in, n_out, dtype=PARAMETER_DTYPE),
            ACTIVATIONS[activation](),
        ]
    return nn.Sequential(*layers)


class VAEModule(nn.Module):
    """Gaussian VAE: q(z|x) = N(m(x), diag s(x)^2), p(x|z) = N(mu(z), diag var).

    The prior p(z) is N(0, I), or a mixture of ``prior_components``
    full-covariance Gaussians with learned weights, means and covariances.
    With ``linear_path``, the encoder mean and the decoder mean each add a
    linear map of their input to the network's output (``mu(z) = W z + b +
    MLP(z)``), so that the module can start as a linear-Gaussian model
    (:meth:`initialize_linear`) and training adds to it.

    Parameters
    ----------
    n_features : int
        Dimension of x.
    n_components : int
        Dimension of z.
    hidden_layer_sizes : tuple of int
        Hidden widths of the encoder; the decoder mirrors them. An empty tuple
        gives a linear encoder and decoder (a linear VAE, whose optimum is
        probabilistic PCA or factor analysis).
    activation : {"identity", "logistic", "tanh", "relu"}
    decoder_variance : {"feature", "shared", "heteroscedastic"} or float
        How the decoder variance is obtained: closed-form per feature, one
        closed-form value for all features, a network head var(z), or fixed.
    min_variance : float
        Floor on every decoder variance.
    mask_input : bool, default=False
        Whether the encoder also sees the missingness mask (input width
        ``2 * n_features``). Without it, missing entries reach the encoder as
        zeros, which is still a valid, if poorer, importance proposal.
    linear_path : bool, default=False
        Whether the encoder and decoder means add a linear map of their input
        to their hidden layers' output (no effect without hidden layers,
        where both are linear already).
    prior_components : int, default=1
        Components of the mixture prior; 1 is the standard normal prior.
    """

    def __init__(
        self,
        n_features,
        n_components,
        hidden_layer_sizes,
        activation,
        decoder_variance,
        min_variance,
        mask_input=False,
        linear_path=False,
        prior_components=1,
    ):
        super().__init__()
        hidden = tuple(int(size) for size in hidden_layer_sizes)
        # Plain Python values: they travel with the weights (pickle, save).
        self.n_features = int(n_features)
        self.n_components = int(n_components)
        self.hidden_layer_sizes = hidden
        self.activation = str(activation)
        self.variance_mode = (
            decoder_variance if isinstance(decoder_variance, str) else "fixed"
        )
        self.min_variance = float(min_variance)
        # A heteroscedastic decoder first trains its mean under the closed-form
        # per-feature variance (warm-up), then switches its variance head on.
        self.variance_head_active = False
        self.mask_input = bool(mask_input)
        self.linear_path = bool(linear_path) and bool(hidden)
        self.prior_components = int(prior_components)

        n_inputs = 2 * n_features if self.mask_input else n_features
        self.encoder_body = _mlp((n_inputs, *hidden), activation)
        self.encoder_head = nn.Linear(
            (n_inputs, *hidden)[-1], 2 * n_components, dtype=PARAMETER_DTYPE
        )
        self.decoder_body = _mlp((n_components, *hidden[::-1]), activation)
        decoder_width = (n_components, *hidden[::-1])[-1]
        self.decoder_mean = nn.Linear(decoder_width, n_features, dtype=PARAMETER_DTYPE)
        if self.variance_mode == "heteroscedastic":
            self.decoder_log_variance = nn.Linear(
                decoder_width, n_features, dtype=PARAMETER_DTYPE
            )
        if self.linear_path:
            self.encoder_linear = nn.Linear(
                n_inputs, n_components, dtype=PARAMETER_DTYPE
            )
            self.decoder_linear = nn.Linear(
                n_components, n_features, dtype=PARAMETER_DTYPE
            )
        if self.prior_components > 1:
            k, q = self.prior_components, n_components
            self.prior_logits = nn.Parameter(torch.zeros(k, dtype=PARAMETER_DTYPE))
            # Distinct means (drawn from N(0, I), as z's marginal), so that
            # the components of a randomly started mixture can separate.
            self.prior_means = nn.Parameter(torch.randn(k, q, dtype=PARAMETER_DTYPE))
            # Cholesky factors: the strict lower triangle of prior_tril, and
            # exp(prior_log_diag) on the diagonal, positive by construction.
            self.prior_tril = nn.Parameter(torch.zeros(k, q, q, dtype=PARAMETER_DTYPE))
            self.prior_log_diag = nn.Parameter(torch.zeros(k, q, dtype=PARAMETER_DTYPE))
        initial = 1.0 if self.variance_mode != "fixed" else float(decoder_variance)
        self.register_buffer(
            "variance",
            torch.full(
                (n_features,), max(initial, self.min_variance), dtype=PARAMETER_DTYPE
            ),
        )

    @property
    def widest_layer(self):
        """The largest of the data's and the hidden layers' widths.

        Also of :attr:`prior_width`. Sets how many rows fit in a chunk of
        bounded memory when scoring.
        """
        hidden = [m.out_features for m in self.encoder_body if isinstance(m, nn.Linear)]
        return max([self.n_features, *hidden, self.prior_width])

    @property
    def prior_width(self):
        """Values one latent draw expands to in a mixture prior's log-density.

        Components times latent dimensions; 0 for the N(0, I) prior, whose
        log-density needs nothing beyond the draw itself.
        """
        if self.prior_components == 1:
            return 0
        return self.prior_components * self.n_components

    @property
    def is_gaussian(self):
        """Whether p(x) is a Gaussian: ``N(b, W W^T + diag(variance))``.

        So it is for a decoder mean without hidden layers (``W z + b``), the
        N(0, I) prior and a variance that does not depend on z; its density
        then needs no importance draws.
        """
        return (
            len(self.decoder_body) == 0
            and self.prior_components == 1
            and self.variance_mode != "heteroscedastic"
        )

    @property
    def has_linear_decoder(self):
        """Whether p(x|z) is ``N(A z + c, diag(variance))`` (:meth:`linear_decoder`).

        So it is without hidden layers, or where the hidden layers'
        contribution to the decoder mean is zero (the output layer's weights
        all zero, as at a linear start), and for a variance that does not
        depend on z. Then p(x) is a Gaussian mixture, one component per
        component of the prior, and its density needs no importance draws.
        """
        if self.variance_mode == "heteroscedastic" and self.variance_head_active:
            return False
        if len(self.decoder_body) == 0:
            return True
        return self.linear_path and not bool(self.decoder_mean.weight.any())

    def linear_decoder(self):
        """``(A, c)``, the decoder mean's ``A z + c`` (:attr:`has_linear_decoder`)."""
        if self.linear_path:
            return (
                self.decoder_linear.weight,
                self.decoder_linear.bias + self.decoder_mean.bias,
            )
        return self.decoder_mean.weight, self.decoder_mean.bias

    def prior_mixture(self):
        """Log weights (K,), means (K, q) and Cholesky factors (K, q, q) of p(z).

        The N(0, I) prior is the mixture of one component.
        """
        if self.prior_components > 1:
            log_weights = torch.log_softmax(self.prior_logits, 0)
            return log_weights, self.prior_means, self.prior_cholesky()
        like = self.variance
        q = self.n_components
        return (
            like.new_zeros(1),
            like.new_zeros(1, q),
            torch.eye(q, dtype=like.dtype, device=like.device).unsqueeze(0),
        )

    def marginal_gaussian(self):
        """Mean and covariance of p(x) where it is a Gaussian, ``N(c, A A^T + diag(variance))``.

        So it is for a Gaussian model (:attr:`is_gaussian`), and for any
        linear decoder (:attr:`has_linear_decoder`, such as a kept linear
        start) under the N(0, I) prior.
        """
        weight, bias = self.linear_decoder()
        return bias, weight @ weight.T + torch.diag(self.variance)

    @property
    def closed_form_variance(self):
        """Whether training sets the variance to its closed-form optimum."""
        return self.variance_mode in ("feature", "shared") or (
            self.variance_mode == "heteroscedastic" and not self.variance_head_active
        )

    def activate_variance_head(self):
        """End the heteroscedastic warm-up without a jump in the likelihood.

        The head starts as the constant log of the per-feature variance reached
        during warm-up, so var(z) equals it at the switch.
        """
        head = self.decoder_log_variance
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(
                torch.log((self.variance - self.min_variance).clamp(min=1e-12))
            )
        self.variance_head_active = True

    def encode(self, x, mask=None):
        """Posterior mean and standard deviation of q(z|x).

        Where ``mask`` (observed entries) is given, missing entries of ``x``
        reach the encoder as zeros, the mean of standardized data.
        """
        if mask is not None:
            x = torch.where(mask, x, 0.0)
        if self.mask_input:
            observed = torch.ones_like(x) if mask is None else mask.to(x.dtype)
            x = torch.cat([x, observed], -1)
        x = x.clamp(-INPUT_CLIP, INPUT_CLIP)
        mean, raw_std = self.encoder_head(self.encoder_body(x)).chunk(2, dim=-1)
        if self.linear_path:
            mean = mean + self.encoder_linear(x)
        return mean, nn.functional.softplus(raw_std) + STD_FLOOR

    def decode(self, z, clip=True):
        """Decoder mean and variance; the variance broadcasts against the mean.

        ``clip=False`` skips the clipping of ``z``, for training, where z is
        drawn from the posterior of a clipped input and a clamp would only
        add two operations to every step.
        """
        if clip:
            z = z.clamp(-INPUT_CLIP, INPUT_CLIP)
        h = self.decoder_body(z)
        mean = self.decoder_mean(h)
        if self.linear_path:
            mean = mean + self.decoder_linear(z)
        if self.variance_mode == "heteroscedastic" and self.variance_head_active:
            log_var = self.decoder_log_variance(h).clamp(*LOG_VARIANCE_BOUNDS)
            return mean, self.min_variance + torch.exp(log_var)
        return mean, self.variance

    def training_terms(self, x, eps, mask=None, fit_variance=True):
        r"""Single-draw ELBO terms for a batch.

        With a mask, this is the masked ELBO of the observed part
        :math:`x_o` (missing entries of ``x`` must be finite, e.g. zero):

        .. math::

            \mathbb E_{q(z|x_o)}\Big[\sum_{d \in o} \log p(x_d|z)\Big]
            - \mathrm{KL}(q(z|x_o)\,\|\,p(z)),

        a lower bound on :math:`\log p(x_o)`, which under a diagonal decoder
        marginalises the missing entries exactly.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
        eps : Tensor of shape (batch, n_components)
            Standard-normal draws for the reparameterisation z = m + s * eps.
        mask : Tensor of bool, default=None
            Observed entries of ``x``; None when all are.
        fit_variance : bool, default=True
            Use the batch's closed-form variance where that applies; false
            (validation) uses the stored variance instead.

        Returns
        -------
        log_px : Tensor of shape (batch,)
            log p(x|z), with the closed-form variance where that applies.
        kl : Tensor of shape (batch, n_components)
            KL(q(z|x) || p(z)) per latent dimension.
        squared_residuals : Tensor of shape (batch, n_features)
            Detached, for the running estimate of the variance; zero at
            missing entries.
        variance : Tensor
            The decoder variance used, detached: the batch's closed-form one
            (shape (n_features,)) where that applies.
        """
        mean, std = self.encode(x, mask)
        z = mean + std * eps
        x_mean, var = self.decode(z, clip=False)
        squared = (x - x_mean) ** 2
        if mask is not None:
            squared = torch.where(mask, squared, 0.0)
        if fit_variance and self.closed_form_variance:
            var = optimal_variance(
                squared, self.variance_mode == "shared", self.min_variance, mask
            )
        log_px = gaussian_log_prob_of_squares(squared, var, mask)
        if self.prior_components == 1:
            kl = kl_to_standard_normal(mean, std)
        else:
            # No closed form under a mixture prior: the single-draw estimate
            # log q(z|x) - log p(z) at the z of the reconstruction term.
            log_q = -0.5 * (LOG_2PI + eps**2).sum(-1) - torch.log(std).sum(-1)
            kl = (log_q - self.log_prior(z)).unsqueeze(-1)
        return log_px, kl, squared.detach(), var.detach()

    def prior_cholesky(self):
        """Cholesky factors of the mixture prior's covariances, (K, q, q)."""
        return torch.tril(self.prior_tril, -1) + torch.diag_embed(
            torch.exp(self.prior_log_diag)
        )

    def log_prior(self, z):
        """log p(z), summed over the last dimension of z."""
        if self.prior_components == 1:
            return standard_normal_log_prob(z)
        return mixture_log_prob(z, *self.prior_mixture(), self.prior_log_diag.sum(1))

    def prior_moments(self):
        """Mean and variance of each latent dimension under the prior."""
        if self.prior_components == 1:
            zero = self.variance.new_zeros(self.n_components)
            return zero, zero + 1.0
        weights = torch.softmax(self.prior_logits, 0).unsqueeze(1)
        variances = (self.prior_cholesky() ** 2).sum(-1)
        mean = (weights * self.prior_means).sum(0)
        second = (weights * (variances + self.prior_means**2)).sum(0)
        return mean, second - mean**2

    def kl_per_dimension(self, mean, std):
        """KL of q(z_j|x) to the prior's marginal moments of z_j, per dimension.

        The KL to the prior itself under the standard normal prior; under a
        mixture prior, to the Gaussian with the same mean and variance, which
        still shows a dimension the encoder does not use (near zero).
        """
        if self.prior_components == 1:
            return kl_to_standard_normal(mean, std)
        prior_mean, prior_var = self.prior_moments()
        return kl_between_normals(mean, std, prior_mean, prior_var)

    def sample_prior(self, normal, uniform):
        """Draws from p(z) given standard-normal ``normal`` (n, q) and ``uniform`` (n,).

        ``uniform`` picks the mixture component (by inverting the CDF of the
        weights), ``normal`` the point within it.
        """
        if self.prior_components == 1:
            return normal
        cdf = torch.softmax(self.prior_logits, 0).cumsum(0)
        component = torch.searchsorted(cdf, uniform * cdf[-1])
        component = component.clamp(max=self.prior_components - 1)
        z = torch.empty_like(normal)
        for k, cholesky in enumerate(self.prior_cholesky()):
            rows = component == k
            z[rows] = self.prior_means[k] + normal[rows] @ cholesky.T
        return z

    @torch.no_grad()
    def initialize_linear(self, start):
        """Start at a linear-Gaussian model: see :class:`LinearStart`.

        The decoder mean becomes ``W z + b`` and the encoder's posterior
        ``N(A x + c, diag s^2)``, the hidden layers' contributions to both
        means zero; the decoder variance and, for a mixture prior, its
        weights, means and covariances come from ``start`` too.
        """
        tensor = lambda a: torch.as_tensor(  # noqa: E731
            a, dtype=PARAMETER_DTYPE, device=self.encoder_head.bias.device
        )
        q = self.n_components
        mean_head, std_head = self.encoder_head.weight[:q], self.encoder_head.weight[q:]
        std_head.zero_()
        target = tensor(start.posterior_std) - STD_FLOOR
        # softplus^-1(y) = log(expm1(y)) = y + log(-expm1(-y)), for the std
        # of the posterior; the second form does not overflow past y = 88 in
        # float32 (unstandardized data of a large scale).
        target = target.clamp(min=1e-6)
        self.encoder_head.bias[q:] = target + torch.log(-torch.expm1(-target))
        if self.linear_path:
            encoder_weight = self.encoder_linear.weight
            encoder_bias = self.encoder_linear.bias
            decoder = self.decoder_linear
            mean_head.zero_()
            self.encoder_head.bias[:q] = 0.0
            self.decoder_mean.weight.zero_()
            self.decoder_mean.bias.zero_()
        else:  # no hidden layer: the head and the output layer are the linear maps
            encoder_weight, encoder_bias = mean_head, self.encoder_head.bias[:q]
            decoder = self.decoder_mean
        encoder_weight.zero_()  # the mask's inputs, where the encoder sees them
        encoder_weight[:, : self.n_features] = tensor(start.encoder_weight)
        encoder_bias.copy_(tensor(start.encoder_bias))
        decoder.weight.copy_(tensor(start.decoder_weight))
        decoder.bias.copy_(tensor(start.decoder_bias))
        if self.variance_mode != "fixed":  # a fixed variance stays as given
            self.variance.copy_(
                tensor(start.noise_variance).clamp(min=self.min_variance)
            )
        if self.prior_components > 1:
            cholesky = tensor(start.prior_cholesky)
            self.prior_logits.copy_(torch.log(tensor(start.prior_weights)))
            self.prior_means.copy_(tensor(start.prior_means))
            self.prior_tril.copy_(torch.tril(cholesky, -1))
            self.prior_log_diag.copy_(torch.log(torch.diagonal(cholesky, 0, 1, 2)))

    def importance_log_weights(self, x, eps, mask=None):
        r"""Log importance weights log p(x, z_k) - log q(z_k | x) for each draw.

        Parameters
        ----------
        x : Tensor of shape (batch, n_features)
        eps : Tensor of shape (n_draws, n_components)
            Standard-normal draws shared by every row, so that a row's estimate
            does not depend on which other rows are scored with it.
        mask : Tensor of bool, default=None
            Observed entries of ``x``; only they enter p(x|z), which gives the
            weights of log p(x_o), the missing entries marginalised exactly.

        Returns
        -------
        Tensor of shape (batch, n_draws)
            ``log_mean_exp`` over the draws is the importance-weighted (IWAE)
            estimate of log p(x); their mean is the ELBO.
        """
        return self._importance(x, eps, mask)[0]

    def _importance(self, x, eps, mask):
        """Log weights, decoder means and variances for each draw.

        A row with no observed entry has the prior as its posterior: its
        proposal is the Gaussian of the prior's moments, not the encoder's
        q(z|nothing), which training hardly ever sees. Under the N(0, I)
        prior its weights are then equal, and its imputation is the mean of
        mu(z) over draws of the prior itself.
        """
        mean, std = self.encode(x, mask)
        if mask is not None:
            empty = ~mask.any(1, keepdim=True)
            if empty.any():
                prior_mean, prior_variance = self.prior_moments()
                mean = torch.where(empty, prior_mean.to(mean), mean)
                std = torch.where(empty, prior_variance.sqrt().to(std), std)
        z = mean.unsqueeze(1) + std.unsqueeze(1) * eps
        x_mean, var = self.decode(z)
        log_px = gaussian_log_prob(
            x.unsqueeze(1), x_mean, var, None if mask is None else mask.unsqueeze(1)
        )
        log_q = -0.5 * (LOG_2PI + eps**2).sum(-1) - torch.log(std).sum(-1, keepdim=True)
        return log_px + self.log_prior(z) - log_q, x_mean, var

    def conditional_mean(self, x, eps, mask):
        r"""E[x | x_o] by self-normalised importance sampling.

        .. math::

            \hat x = \sum_k \bar w_k\, \mu(z_k), \qquad
            \bar w_k = \frac{w_k}{\sum_j w_j}, \qquad
            w_k = \frac{p(x_o|z_k)\,p(z_k)}{q(z_k|x_o)},

        the single-imputation rule of MIWAE (Mattei and Frellsen 2019), with
        the draws ``eps`` of :meth:`importance_log_weights`. Returns a tensor
        of shape (batch, n_features); only its missing entries are of use.
        """
        log_w, x_mean, _ = self._importance(x, eps, mask)
        return torch.einsum("bk,bkd->bd", torch.softmax(log_w, 1), x_mean)

    def posterior_predictive(self, x, eps, mask, uniform, noise):
        """A draw from p(x | x_o) by sampling importance resampling.

        Picks draw k with probability given by the normalised importance
        weights (by inverting their CDF at ``uniform``, shape (batch,)), then
        adds decoder noise (``noise``, standard normal of x's shape) to
        mu(z_k) (Mattei and Frellsen 2019, multiple imputation).
        """
        log_w, x_mean, var = self._importance(x, eps, mask)
        cdf = torch.softmax(log_w, 1).cumsum(1)
        k = torch.searchsorted(cdf, uniform.unsqueeze(1) * cdf[:, -1:])
        index = k.clamp(max=cdf.shape[1] - 1).unsqueeze(-1).expand(-1, 1, x.shape[1])
        mean = x_mean.gather(1, index).squeeze(1)
        std = torch.sqrt(var.expand_as(x_mean).gather(1, index).squeeze(1))
        return mean + std * noise

    def sample(self, z, noise):
        """Draws from p(x|z) given standard-normal ``noise`` of x's shape."""
        x_mean, var = self.decode(z)
        return x_mean + torch.sqrt(var) * noise
