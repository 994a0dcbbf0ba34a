"""Which VAE score detects anomalies best, and what training choices do to it.

For each setting of GaussianVAE (decoder variance, training length, early
stopping, beta, latent size), fits on all rows of each data set in
``../shared/data/anomaly`` (unsupervised: anomalies stay in the training data)
and ranks all rows by four scores, higher meaning more normal:

- ``iwae``: the importance-weighted log-likelihood (``score_samples``);
- ``elbo``: the evidence lower bound, with the same draws;
- ``recon_logprob``: E_q[log p(x|z)], An & Cho's reconstruction probability;
- ``recon_error``: minus the squared error of the decoder mean at the
  posterior mean, in standardized units (a plain autoencoder score).

Prints mean ROC AUC and average precision over the data sets and seeds. Each
run is appended to a JSON-lines file as it ends; rerunning with the same file
skips the runs already there.

    python benchmarks/anomaly_scores.py [--seeds 2] [--n-jobs 1] [--runs FILE]
"""

import argparse
import os
import platform
import sys
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from _anomaly_runs import DATA_DIR, data_names, resumable_runs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import average_precision_score, roc_auc_score

from skvae import GaussianVAE
from skvae._device import inference_dtype
from skvae._likelihood import gaussian_log_prob

SETTINGS = {
    "feature": {},
    "n_components=8": {"n_components": 8},
    "hidden_layer_sizes=()": {"hidden_layer_sizes": ()},
    "hidden_layer_sizes=(16,)": {"hidden_layer_sizes": (16,)},
    "shared": {"decoder_variance": "shared"},
    "heteroscedastic": {"decoder_variance": "heteroscedastic"},
    "(16,), n_components=4": {"hidden_layer_sizes": (16,), "n_components": 4},
    "kl_warmup=20": {"kl_warmup": 20},
    "beta=2": {"beta": 2.0},
    "early_stopping": {"early_stopping": True},
    "max_iter=25": {"max_iter": 25},
}
SCORES = ("iwae", "elbo", "recon_logprob", "recon_error")


def all_scores(vae, X):
    """The four scores of each row of X under a fitted GaussianVAE."""
    dtype = inference_dtype(vae.device_)
    eps = vae._importance_draws(dtype)

    # _map_rows passes the observed-entry mask too: None, as these data sets
    # have no missing values.
    def per_row(module, x, mask):
        mean, std = module.encode(x)
        z = mean.unsqueeze(1) + std.unsqueeze(1) * eps
        x_mean, var = module.decode(z)
        recon = gaussian_log_prob(x.unsqueeze(1), x_mean, var).mean(1)
        elbo = module.importance_log_weights(x, eps).mean(1)
        error = -((x - module.decode(mean)[0]) ** 2).sum(-1)
        return torch.stack([elbo, recon, error], 1)

    elbo, recon, error = vae._map_rows(X, per_row, vae._importance_width()).T
    return {
        "iwae": vae.score_samples(X),
        "elbo": elbo,
        "recon_logprob": recon,
        "recon_error": error,
    }


def run_one(data_name, setting, seed):
    data = np.load(DATA_DIR / f"{data_name}.npz")
    X, y = data["X"], data["y"]
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        vae = GaussianVAE(random_state=seed, device="cpu", **SETTINGS[setting]).fit(X)
    out = {}
    for name, score in all_scores(vae, X).items():
        outlyingness = -score
        out[name] = (
            roc_auc_score(y, outlyingness),
            average_precision_score(y, outlyingness),
        )
    return data_name, setting, seed, out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--runs", type=Path, default=Path("anomaly_scores.jsonl"))
    args = parser.parse_args(argv)
    names = data_names()
    done = resumable_runs(run_one, SETTINGS, names, args.seeds, args.runs, args.n_jobs)
    results = [r for r in done if r[1] in SETTINGS and r[2] < args.seeds]
    settings = [s for s in SETTINGS if any(r[1] == s for r in results)]
    table = {}  # (setting, score) -> dataset -> list of (auc, ap)
    for data_name, setting, _, out in results:
        for score, metrics in out.items():
            table.setdefault((setting, score), {}).setdefault(data_name, []).append(
                metrics
            )
    print(
        f"Command: `python benchmarks/anomaly_scores.py {' '.join(argv or sys.argv[1:])}`"
    )
    print(
        f"Versions: torch {torch.__version__}, scikit-learn {sklearn.__version__}, "
        f"numpy {np.__version__}; {platform.machine()}, {os.cpu_count()} cores."
    )
    print()
    print(
        f"Mean over {len(names)} data sets and {args.seeds} seeds: ROC AUC / "
        "average precision."
    )
    print()
    print("| setting | " + " | ".join(SCORES) + " |")
    print("|---" * (len(SCORES) + 1) + "|")
    for setting in settings:
        cells = []
        for score in SCORES:
            per_data = table[(setting, score)]
            auc = np.mean([np.mean([m[0] for m in v]) for v in per_data.values()])
            ap = np.mean([np.mean([m[1] for m in v]) for v in per_data.values()])
            cells.append(f"{auc:.3f} / {ap:.3f}")
        print(f"| {setting} | " + " | ".join(cells) + " |")
    print()
    print("ROC AUC per data set, iwae score:")
    print()
    print("| setting | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for setting in settings:
        per_data = table[(setting, "iwae")]
        cells = [f"{np.mean([m[0] for m in per_data[d]]):.3f}" for d in names]
        print(f"| {setting} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
