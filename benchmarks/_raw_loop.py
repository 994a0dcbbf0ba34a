"""The reference for speed.py: the same VAE as a PyTorch user would write it by hand.

64-64 MLPs, the same latent size, fused Adam, tensors in memory,
``torch.randperm`` batches, no DataLoader.
"""

import math
import time

import torch
from _common import seeded_torch
from _speed import HIDDEN, LATENT, synchronize
from torch import nn


class RawVAE(nn.Module):
    """The same network, as a PyTorch user would write it by hand."""

    def __init__(self, n_features):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(n_features, HIDDEN[0]),
            nn.ReLU(),
            nn.Linear(HIDDEN[0], HIDDEN[1]),
            nn.ReLU(),
            nn.Linear(HIDDEN[1], 2 * LATENT),
        )
        self.decoder = nn.Sequential(
            nn.Linear(LATENT, HIDDEN[1]),
            nn.ReLU(),
            nn.Linear(HIDDEN[1], HIDDEN[0]),
            nn.ReLU(),
            nn.Linear(HIDDEN[0], n_features),
        )

    def loss(self, x):
        """Negative ELBO per row with the closed-form per-feature variance."""
        mean, raw = self.encoder(x).chunk(2, dim=-1)
        std = nn.functional.softplus(raw) + 1e-4
        x_mean = self.decoder(mean + std * torch.randn_like(std))
        squared = (x - x_mean) ** 2
        var = squared.detach().mean(0).clamp(min=1e-4)
        nll = 0.5 * (math.log(2 * math.pi) + var.log() + squared / var).sum(-1)
        kl = 0.5 * (mean**2 + std**2 - 2 * std.log() - 1).sum(-1)
        return (nll + kl).mean()


def raw_setup(X, device):
    """The loop's state: standardized data on the device, model, Adam.

    Call it inside :func:`_common.seeded_torch`: the model's initial weights
    come from torch's global generator, as in a user's script.
    """
    data = torch.from_numpy((X - X.mean(0)) / X.std(0)).to(device)
    model = RawVAE(X.shape[1]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    return data, model, optimizer


def raw_epoch(data, model, optimizer, batch_size, device):
    """One epoch of the hand-written loop: ``torch.randperm`` batches, no DataLoader."""
    for index in torch.randperm(len(data), device=device).split(batch_size):
        loss = model.loss(data[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def fit_raw(X, batch_size, warmup_epochs, epochs, device):
    """Seconds for ``epochs - warmup_epochs`` epochs of the hand-written loop.

    The data are standardized and moved to the device once; the first
    ``warmup_epochs`` epochs are not timed, as the differencing does for the
    estimator.
    """
    with seeded_torch(0, device):
        data, model, optimizer = raw_setup(X, device)
        tic = None
        for epoch in range(epochs):
            if epoch == warmup_epochs:
                synchronize(device)
                tic = time.perf_counter()
            raw_epoch(data, model, optimizer, batch_size, device)
        synchronize(device)
    return time.perf_counter() - tic
