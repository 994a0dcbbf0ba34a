"""Which VAE score detects anomalies best, and what training choices do to it.

For each setting of GaussianVAE (decoder variance, training length, early
stopping, beta, latent size), fits on all rows of each data set in
``../shared/data/anomaly`` (unsupervised: anomalies stay in the training data)
and ranks all rows by four scores, higher meaning more normal:

- ``iwae``: the importance-weighted log-likelihood (``score_samples``);
- ``elbo``: the evidence lower bound, with importance draws of the same kind
  and number as ``score_samples`` (seeded by the run's seed);
- ``recon_logprob``: E_q[log p(x|z)], An & Cho's reconstruction probability;
- ``recon_error``: minus the squared error of the decoder mean at the
  posterior mean, in standardized units (a plain autoencoder score).

The last three need the fitted network itself: the script evaluates them with
``skvae._inference.map_rows`` on the public fitted attributes (``module_``,
``mean_``, ``scale_``, ``device_``). Prints mean ROC AUC and average precision
over the data sets and seeds (one torch thread per run). Each run is appended
to a JSON-lines file as it ends; rerunning with the same file skips the runs
already there. The user guide's table (docs/guide/outlier_detection.rst) comes
from this script.

    OMP_NUM_THREADS=1 python benchmarks/anomaly_scores.py [--seeds 2] [--n-jobs 1]
        [--runs anomaly_scores.jsonl] [--data NAME ...]
"""

import warnings

import _common as harness
import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import average_precision_score, roc_auc_score

from skvae import GaussianVAE
from skvae._device import inference_dtype
from skvae._inference import importance_draws, map_rows
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


def all_scores(vae, X, seed):
    """The four scores of each row of X under a fitted GaussianVAE."""
    eps = importance_draws(
        vae.n_components_,
        vae.n_importance_samples,
        seed,
        vae.device_,
        inference_dtype(vae.device_),
    )

    # map_rows passes the observed-entry mask too: None, as these data sets
    # have no missing values.
    def per_row(module, x, mask):
        mean, std = module.encode(x)
        z = mean.unsqueeze(1) + std.unsqueeze(1) * eps
        x_mean, var = module.decode(z)
        recon = gaussian_log_prob(x.unsqueeze(1), x_mean, var).mean(1)
        elbo = module.importance_log_weights(x, eps).mean(1)
        error = -((x - module.decode(mean)[0]) ** 2).sum(-1)
        return torch.stack([elbo, recon, error], 1)

    # Values per row inside per_row: draws times the widest layer (which
    # counts a mixture prior's components times latent dimensions).
    width = vae.n_importance_samples * vae.module_.widest_layer
    elbo, recon, error = map_rows(
        vae.module_,
        X,
        per_row,
        device=vae.device_,
        mean=vae.mean_,
        scale=vae.scale_,
        width=width,
    ).T
    return {
        "iwae": vae.score_samples(X),
        "elbo": elbo,
        "recon_logprob": recon,
        "recon_error": error,
    }


def run_one(data_name, setting, seed):
    X, y = harness.load(data_name)
    with warnings.catch_warnings(), harness.torch_threads(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        vae = GaussianVAE(random_state=seed, device="cpu", **SETTINGS[setting]).fit(X)
        scores = all_scores(vae, X, seed)
    out = {}
    for name, score in scores.items():
        outlyingness = -score
        out[name] = (
            roc_auc_score(y, outlyingness),
            average_precision_score(y, outlyingness),
        )
    return data_name, setting, seed, out


def main(argv=None):
    parser = harness.argument_parser(
        __doc__, runs="anomaly_scores.jsonl", data=True, seeds=2
    )
    args = parser.parse_args(argv)
    names, results = harness.run_study(run_one, SETTINGS, args)
    metrics = {}  # (setting, score) -> data set -> list of (auc, ap)
    for data_name, setting, _, out in results:
        for score, values in out.items():
            metrics.setdefault((setting, score), {}).setdefault(data_name, []).append(
                values
            )
    settings = [s for s in SETTINGS if any((s, score) in metrics for score in SCORES)]
    rows = []
    for setting in settings:
        cells = []
        for score in SCORES:
            per_data = metrics[setting, score].values()
            auc, ap = np.mean([np.mean(v, axis=0) for v in per_data], axis=0)
            cells.append(f"{auc:.3f} / {ap:.3f}")
        rows.append([setting, *cells])
    per_data_rows = [
        [s, *(f"{np.mean(metrics[s, 'iwae'][d], axis=0)[0]:.3f}" for d in names)]
        for s in settings
    ]
    harness.publish(
        [
            harness.command(argv),
            "",
            *harness.header(),
            f"Mean over {len(names)} data sets and {args.seeds} seeds: ROC AUC / "
            "average precision.",
            "",
            *harness.table(["setting", *SCORES], rows),
            "",
            "ROC AUC per data set, iwae score:",
            "",
            *harness.table(["setting", *names], per_data_rows),
        ]
    )


if __name__ == "__main__":
    main()
