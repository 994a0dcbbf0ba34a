"""Held-out log-likelihood of GaussianVAE() fitted to incomplete rows.

Each data set (labels ignored; at most 4,000 rows, subsampled with seed 0) is
split 70/30 by the seed; a fraction of the entries of both parts is removed
completely at random, GaussianVAE() is fitted to the incomplete training
rows, and its mean log-likelihood of the held-out rows' observed entries
(``score``; rows with nothing observed dropped) is printed, one JSON line
per fit, with the fit's time, ``init_`` and ``n_iter_``.

    OMP_NUM_THREADS=1 python benchmarks/missing_density.py [--rate 0.2]
        [--seeds 1] [--data NAME ...]
"""

import argparse
import json
import time
import warnings

import _common as harness
import numpy as np
from sklearn.model_selection import train_test_split

from skvae import GaussianVAE

DEFAULT_DATA = [
    "breast_cancer",
    "wine_sklearn",
    "diabetes",
    "cardio",
    "fault",
    "annthyroid",
    "vertebral",
    "yeast",
    "pima",
    "wdbc",
]
MAX_ROWS = 4000


def load(name):
    if name in harness.SKLEARN:
        return harness.SKLEARN[name](return_X_y=True)[0]
    X = harness.load(name)[0].astype(np.float64)
    if len(X) > MAX_ROWS:
        X = X[np.random.default_rng(0).choice(len(X), MAX_ROWS, replace=False)]
    return X


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter
    for name in args.data:
        X = load(name)
        for seed in range(args.seeds):
            train, test = train_test_split(X, test_size=0.3, random_state=seed)
            rng = np.random.default_rng(seed)
            train = np.where(rng.random(train.shape) < args.rate, np.nan, train)
            test = np.where(rng.random(test.shape) < args.rate, np.nan, test)
            test = test[~np.isnan(test).all(1)]
            start = time.perf_counter()
            vae = GaussianVAE(random_state=seed).fit(train)
            score = vae.score(test)
            record = {
                "data": name,
                "seed": seed,
                "score": round(float(score), 4),
                "seconds": round(time.perf_counter() - start, 2),
                "init_": vae.init_,
                "n_iter_": int(vae.n_iter_),
            }
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
