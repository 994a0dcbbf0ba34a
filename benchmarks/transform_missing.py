"""How well transform's codes of incomplete rows recover the true factors.

Rows of a linear two-factor model (x = W z + noise, 10 features, noise sd
0.3) lose a fraction of their entries completely at random. Each model is
fitted on 2,000 training rows (complete, or with the entries missing), and
2,000 new incomplete rows are coded three ways:

- the encoder's mean of q(z | x), with the missing entries at the feature
  means where the encoder saw no masks in training;
- the exact posterior mean E[z | x_o], where the decoder is linear (what
  ``transform`` returns there);
- a self-normalised importance estimate of E[z | x_o] from the scoring
  draws (``n_importance_samples``), for any decoder.

The score is the R² of the best linear map from a code to the true z (the
latent space of a VAE is defined up to such a map); mean ± sd over seeds.

    OMP_NUM_THREADS=1 python benchmarks/transform_missing.py [--seeds 3]
        [--rate 0.3]
"""

import time
import warnings

import _common as harness
import numpy as np
import torch

from skvae import GaussianVAE

N_ROWS, N_FEATURES, N_FACTORS, NOISE = 2000, 10, 2, 0.3
MODELS = {
    "linear": dict(n_components=N_FACTORS, hidden_layer_sizes=()),
    "network (64, 64)": dict(
        n_components=N_FACTORS, hidden_layer_sizes=(64, 64), init="random"
    ),
}


def factor_data(seed, rate):
    """Training rows, new rows with entries missing, and the new rows' z."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(N_FACTORS, N_FEATURES))
    z = rng.normal(size=(2 * N_ROWS, N_FACTORS))
    X = z @ W + NOISE * rng.normal(size=(2 * N_ROWS, N_FEATURES))
    missing = rng.random(X.shape) < rate
    missing[missing.all(1), 0] = False  # keep one entry of an empty row
    X[missing] = np.nan
    return X[:N_ROWS], X[N_ROWS:], z[N_ROWS:]


def recovered(codes, z):
    """R² of the least-squares linear map (with intercept) from codes to z."""
    design = np.column_stack([codes, np.ones(len(codes))])
    fitted = design @ np.linalg.lstsq(design, z, rcond=None)[0]
    return 1.0 - ((fitted - z) ** 2).sum() / ((z - z.mean(0)) ** 2).sum()


def codes(vae, X):
    """The three codes of the rows of X (the exact one None for a network)."""

    def encoded(module, x, mask):
        return module.encode(x, mask)[0]

    eps = vae._importance_draws()

    def weighted(module, x, mask):
        mean, std = module.encode(x, mask)
        draws = mean.unsqueeze(1) + std.unsqueeze(1) * eps
        weights = torch.softmax(module.importance_log_weights(x, eps, mask), 1)
        return torch.einsum("bk,bkq->bq", weights, draws)

    width = vae.module_.widest_layer
    return {
        "encoder": vae._map_rows(X, encoded, width),
        "exact": vae.transform(X) if vae.module_.has_linear_decoder else None,
        "importance": vae._map_rows(X, weighted, eps.shape[0] * width),
    }


def main():
    parser = harness.argument_parser(__doc__, seeds=3)
    parser.add_argument("--rate", type=float, default=0.3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
    rows = []
    for name, params in MODELS.items():
        for training in ("complete", "missing"):
            scores, seconds = {"encoder": [], "exact": [], "importance": []}, []
            for seed in range(args.seeds):
                train, new, z = factor_data(seed, args.rate)
                if training == "complete":
                    train = factor_data(seed, 0.0)[0]
                start = time.perf_counter()
                vae = GaussianVAE(random_state=seed, device="cpu", **params)
                vae.fit(train)
                seconds.append(time.perf_counter() - start)
                for key, value in codes(vae, new).items():
                    if value is not None:
                        scores[key].append(recovered(value, z))
            rows.append(
                [name, training]
                + [harness.mean_sd(scores[k]) for k in scores]
                + [f"{np.median(seconds):.1f}"]
            )
            harness.log(harness.table_row(rows[-1]))
    lines = [harness.command(), "", *harness.header()]
    lines += [f"{args.rate:.0%} of the new rows' entries missing.", ""]
    lines += harness.table(
        [
            "model",
            "trained on",
            "encoder's mean",
            "exact posterior mean",
            "importance-sampled posterior mean",
            "fit s",
        ],
        rows,
        "llrrrr",
    )
    harness.publish(lines)


if __name__ == "__main__":
    main()
