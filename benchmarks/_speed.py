"""What the sections of speed.py share: synthetic data, timed fits, PyOD's VAE.

Every model here has the same network: 64-64 MLPs and 8 latent dimensions.
"""

import math
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from skvae import GaussianVAE

HIDDEN = (64, 64)
LATENT = 8


def synthetic(n_samples, n_features, seed=0):
    """Rows near a curved 2-d manifold, float32, built in place chunk by chunk.

    Generated in chunks so that no temporary larger than a chunk exists: the
    memory baseline taken after this call is then the true one.
    """
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((2, n_features)).astype(np.float32)
    B = rng.standard_normal((n_features, n_features)).astype(np.float32)
    B /= np.sqrt(n_features)
    X = np.empty((n_samples, n_features), dtype=np.float32)
    for start in range(0, n_samples, 65536):
        rows = min(65536, n_samples - start)
        z = rng.standard_normal((rows, 2), dtype=np.float32)
        X[start : start + rows] = np.tanh(z @ A) @ B * 3.0 + 10.0
        X[start : start + rows] += 0.1 * rng.standard_normal(
            (rows, n_features), dtype=np.float32
        )
    return X


def vae(batch_size, epochs, device, **params):
    """GaussianVAE that trains the raw loop's network exactly ``epochs`` epochs.

    One randomly started network, no validation rows, no early stop: the
    default (``init="auto"`` with early stopping) would also compute a
    closed-form start and train a second network beside the first, twice
    the epochs of the raw loop, which would time the default's extra work
    rather than the training loop.
    """
    params = {"init": "random", "early_stopping": False, **params}
    return GaussianVAE(
        n_components=LATENT,
        hidden_layer_sizes=HIDDEN,
        batch_size=batch_size,
        max_iter=epochs,
        n_iter_no_change=max(epochs, 1),
        tol=0.0,
        device=device,
        random_state=0,
        **params,
    )


def fit_quietly(model, X):
    """``model.fit(X)`` without the warning of a fit that ran out of epochs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X)


def auto_fit(X, device, **params):
    """A one-epoch fit with ``batch_size="auto"``; its ``batch_size_`` is the rule's."""
    return fit_quietly(vae("auto", 1, device, **params), X)


def timed(fn):
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def fit_vae(X, batch_size, epochs, device):
    """Seconds of a GaussianVAE fit of ``epochs`` epochs."""
    return timed(lambda: fit_quietly(vae(batch_size, epochs, device), X))


def fit_vae_epochs(X, batch_size, shorter, longer, device):
    """Seconds of ``longer - shorter`` epochs of fit: two fits differenced."""
    return fit_vae(X, batch_size, longer, device) - fit_vae(
        X, batch_size, shorter, device
    )


def fit_pyod(X, batch_size, epochs, device):
    """Seconds of a fit of PyOD's VAE with the same network and batch size."""
    from pyod.models.vae import VAE

    model = VAE(
        epoch_num=epochs,
        batch_size=batch_size,
        encoder_neuron_list=list(HIDDEN),
        decoder_neuron_list=list(HIDDEN[::-1]),
        latent_dim=LATENT,
        dropout_rate=0.0,
        optimizer_params={"weight_decay": 0.0},
        device=device,
        verbose=0,
    )
    return timed(lambda: model.fit(X))


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def rows_per_s(rows, seconds):
    return rows / seconds if seconds > 0 else math.inf
