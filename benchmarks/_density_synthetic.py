"""Synthetic data with a known density, for benchmarks/likelihood.py ``--synthetic``.

A latent ``z ~ N(0, I_q)`` is mapped smoothly and nonlinearly into D features,
noise is added, and each feature is scaled and shifted by very different
amounts::

    g(z) = A tanh(B z + c) + C z
    x = S (g(z) + sigma * eps) + m,    eps ~ N(0, I_D)

with random A (D x H), B (H x q), c, C (D x q), scales S from 1e-2 to 1e3 and
offsets m. This is the family a VAE with a Gaussian decoder and isotropic
noise models, so a good fit reaches the true log-density, which
:func:`true_log_density` computes by quadrature over z: a tensor grid on
``[-7, 7]^q`` in float64, chunked, with a running log-sum-exp.

Not a script: imported by benchmarks/likelihood.py.
"""

import math

import numpy as np
import torch

HIDDEN = 16
BOUND = 7.0  # the grid covers [-BOUND, BOUND]^q
CHUNK = 8192  # grid points per step


def make_synthetic(q=2, n_features=12, n_train=4000, n_test=2000, noise=0.15, seed=0):
    """(X_train, X_test, params) drawn from the model above, seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    params = {
        "A": rng.normal(0, 3 / math.sqrt(HIDDEN), (n_features, HIDDEN)),
        "B": rng.normal(0, 2, (HIDDEN, q)),
        "c": rng.normal(0, 0.5, HIDDEN),
        "C": rng.normal(0, 0.5, (n_features, q)),
        "scale": 10 ** rng.uniform(-2, 3, n_features),
        "noise": noise,
    }
    params["offset"] = params["scale"] * rng.normal(0, 3, n_features)
    z = rng.standard_normal((n_train + n_test, q))
    eps = rng.standard_normal((n_train + n_test, n_features))
    X = params["scale"] * (_g(z, params) + noise * eps) + params["offset"]
    return X[:n_train], X[n_train:], params


def _g(z, params):
    """The nonlinear map g(z), for numpy arrays or float64 tensors."""
    lib = torch if isinstance(z, torch.Tensor) else np
    p = {k: torch.as_tensor(v) if lib is torch else v for k, v in params.items()}
    return lib.tanh(z @ p["B"].T + p["c"]) @ p["A"].T + z @ p["C"].T


def true_log_density(X, params, points):
    """log p(x) of each row of X, by quadrature on ``points`` grid points per axis.

    The rectangle rule on a grid over ``[-7, 7]^q``: the integrand, prior
    times Gaussian likelihood, is smooth and negligible at the edges, so the
    rule converges fast once the grid resolves the posterior's width. In the
    standardized units ``u = (x - m) / S``::

        log p(x) = log sum_k h^q N(z_k; 0, I) N(u; g(z_k), sigma^2 I) - sum log S
    """
    q = params["B"].shape[1]
    sigma = params["noise"]
    u = torch.as_tensor((X - params["offset"]) / params["scale"])
    axis = torch.linspace(-BOUND, BOUND, points, dtype=torch.float64)
    step = float(axis[1] - axis[0])
    grid = torch.cartesian_prod(*[axis] * q).reshape(-1, q)
    d = u.shape[1]
    constant = -d * math.log(sigma * math.sqrt(2 * math.pi)) - q / 2 * math.log(
        2 * math.pi
    )
    u_sq = (u**2).sum(1, keepdim=True)
    total = torch.full((len(u),), -math.inf, dtype=torch.float64)
    for z in grid.split(CHUNK):
        gz = _g(z, params)
        distance = u_sq - 2 * u @ gz.T + (gz**2).sum(1)
        log_joint = -0.5 * distance / sigma**2 - 0.5 * (z**2).sum(1)
        total = torch.logaddexp(total, torch.logsumexp(log_joint, 1))
    log_p = total + constant + q * math.log(step)
    return log_p.numpy() - np.log(params["scale"]).sum()
