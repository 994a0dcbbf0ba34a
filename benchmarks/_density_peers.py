"""The density peers of benchmarks/likelihood.py: classical models and a normalizing flow.

Each peer is fitted on training data standardized with the training mean and
standard deviation; :func:`fit_peer` returns a function that scores rows in
the data's own units, by adding the log-Jacobian of the standardization,
``-sum(log std)``, so that the peers' scores compare with GaussianVAE's.

Not a script: imported by benchmarks/likelihood.py.
"""

import copy
import math
import time

import _common as harness
import numpy as np
import torch
from sklearn.decomposition import FactorAnalysis
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

# Peers with no tuning, or tuned on the training rows only (BIC, 3-fold CV).
CLASSICAL = (
    "Gaussian",
    "GaussianMixture (BIC)",
    "KernelDensity (CV)",
    "FactorAnalysis (CV)",
)
FLOW = "NSF flow"
FLOW_MAX_FEATURES = 100  # wider data is too slow for the flow on a CPU
PEERS = (*CLASSICAL, FLOW)

MAX_MIXTURE_COMPONENTS = 32
MIXTURE_COVARIANCES = ("full", "diag")
BIC_RISES = 3  # consecutive rises of the BIC that end the search
BANDWIDTHS = np.logspace(-2, 1, 16)  # on standardized data
FA_GRID_SIZE = 8
# Largest number of factors tried: one FactorAnalysis fit with all 1,555 of
# internetads' columns as factors takes minutes on a CPU.
FA_MAX_COMPONENTS = 256


def gaussian(Z, seed):
    """A single full-covariance Gaussian."""
    model = GaussianMixture(1, covariance_type="full", random_state=seed).fit(Z)
    return model.score_samples, {}


def n_mixture_parameters(k, d, covariance_type="full"):
    """Free parameters of a mixture of k Gaussians in d dimensions."""
    per_component = d * (d + 1) // 2 if covariance_type == "full" else d
    return k * (d + per_component) + k - 1


def mixture_by_bic(Z, seed):
    """A GaussianMixture with its covariance type and components chosen by BIC.

    Full and diagonal covariances, each from 1 to 32 components; a k with
    more free parameters than training rows is not tried (k = 1 always is),
    and a type's search ends once its BIC has risen for three consecutive k.
    The lowest BIC of both searches wins.
    """
    n, d = Z.shape
    best, best_bic, tried = None, np.inf, 0
    for covariance_type in MIXTURE_COVARIANCES:
        bics = []
        for k in range(1, MAX_MIXTURE_COMPONENTS + 1):
            if k > 1 and n_mixture_parameters(k, d, covariance_type) > n:
                break
            model = GaussianMixture(
                k, covariance_type=covariance_type, random_state=seed
            ).fit(Z)
            bics.append(model.bic(Z))
            tried += 1
            if bics[-1] < best_bic:
                best, best_bic = model, bics[-1]
            if len(bics) > BIC_RISES and all(np.diff(bics[-BIC_RISES - 1 :]) > 0):
                break
    if best is None:  # every BIC NaN or infinite: a failed run, said so
        raise ValueError(f"No finite BIC among {tried} GaussianMixture fits.")
    info = {"n_components": best.n_components, "covariance_type": best.covariance_type}
    return best.score_samples, {**info, "tried": tried}


def kernel_density(Z, seed):
    """A Gaussian KernelDensity, its bandwidth chosen by 3-fold CV on a log grid."""
    search = GridSearchCV(
        KernelDensity(kernel="gaussian"), {"bandwidth": BANDWIDTHS}, cv=3
    ).fit(Z)
    bandwidth = search.best_params_["bandwidth"]
    return search.best_estimator_.score_samples, {"bandwidth": float(bandwidth)}


def factor_analysis(Z, seed):
    """FactorAnalysis, its number of components chosen by 3-fold CV.

    Over a geometric grid of at most eight values from 1 to the number of
    features (at most ``FA_MAX_COMPONENTS``).
    """
    d = min(Z.shape[1], FA_MAX_COMPONENTS)
    grid = np.unique(np.geomspace(1, d, min(d, FA_GRID_SIZE)).round().astype(int))
    search = GridSearchCV(
        FactorAnalysis(random_state=seed), {"n_components": grid.tolist()}, cv=3
    ).fit(Z)
    return search.best_estimator_.score_samples, dict(search.best_params_)


# ------------------------------------------------------------------ flow

FLOW_SETTINGS = {
    "transforms": 5,
    "hidden_features": (128, 128),
    "batch_size": 256,
    "learning_rate": 1e-3,
    "validation_fraction": 0.1,
    "patience": 25,  # epochs without a better validation NLL
    "max_epochs": 1000,
    "max_seconds": 1800.0,
}


def _nll(flow, Z, batch_size=4096):
    """Negative log-likelihood per row of the rows Z (a float32 tensor)."""
    with torch.no_grad():
        return -torch.cat([flow().log_prob(b) for b in Z.split(batch_size)])


def neural_spline_flow(Z, seed, **settings):
    """zuko's neural spline flow (Durkan et al. 2019), with a held-out stopping rule.

    Trains with Adam on 90 % of the rows, and stops when the negative
    log-likelihood of the other 10 % has not improved for ``patience``
    epochs, or at ``max_epochs`` or ``max_seconds``; the weights of the best
    validation epoch are restored. Torch's global generator is seeded for
    the fit and restored after it.
    """
    import zuko

    s = {**FLOW_SETTINGS, **settings}
    data = torch.as_tensor(Z, dtype=torch.float32)
    tic = time.perf_counter()
    with harness.seeded_torch(seed):
        order = torch.randperm(len(data))
        n_val = max(1, round(s["validation_fraction"] * len(data)))
        val, train = data[order[:n_val]], data[order[n_val:]]
        flow = zuko.flows.NSF(
            data.shape[1],
            transforms=s["transforms"],
            hidden_features=s["hidden_features"],
        )
        optimizer = torch.optim.Adam(flow.parameters(), lr=s["learning_rate"])
        best, best_state, epoch, waited = math.inf, None, 0, 0
        while epoch < s["max_epochs"] and waited < s["patience"]:
            epoch += 1
            for rows in torch.randperm(len(train)).split(s["batch_size"]):
                loss = -flow().log_prob(train[rows]).mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(flow.parameters(), 5.0)
                optimizer.step()
            val_nll = _nll(flow, val).mean().item()
            if val_nll < best:  # False for NaN
                best, best_state, waited = val_nll, copy.deepcopy(flow.state_dict()), 0
            else:
                waited += 1
            if time.perf_counter() - tic > s["max_seconds"]:
                break
    if best_state is not None:
        flow.load_state_dict(best_state)

    def score_samples(X):
        return -_nll(flow, torch.as_tensor(X, dtype=torch.float32)).double().numpy()

    stopped = "patience" if waited >= s["patience"] else "cap"
    return score_samples, {"epochs": epoch, "stopped": stopped}


FITS = {
    "Gaussian": gaussian,
    "GaussianMixture (BIC)": mixture_by_bic,
    "KernelDensity (CV)": kernel_density,
    "FactorAnalysis (CV)": factor_analysis,
    FLOW: neural_spline_flow,
}


def fit_peer(name, X_train, seed, **settings):
    """Fit peer ``name`` on standardized X_train.

    Returns ``(score_samples, info)``: a function giving the log-density of
    rows in X_train's units, and a dict of what was chosen (components,
    bandwidth, epochs).
    """
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    log_jacobian = -np.log(std).sum()
    score, info = FITS[name]((X_train - mean) / std, seed, **settings)
    return lambda X: score((X - mean) / std) + log_jacobian, info
