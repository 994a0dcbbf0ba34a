"""Section ``search`` of speed.py: GridSearchCV wall time, n_jobs=1 against n_jobs=2.

python benchmarks/speed.py --sections search [--repeats 3] [--device cpu]
    [--write-docs]
"""

import os
import statistics
from functools import partial

import torch
from _common import table, torch_threads
from _speed import fit_quietly, synthetic, timed
from joblib import Parallel, delayed
from sklearn.model_selection import GridSearchCV

from skvae import GaussianVAE


def run(args, log):
    """GridSearchCV wall time, n_jobs=1 against n_jobs=2."""
    X = synthetic(2_000, 20, seed=2)
    grid = {"n_components": [2, 4], "hidden_layer_sizes": [(32,), (64, 64)]}
    estimator = GaussianVAE(max_iter=10, random_state=0, device=args.device)
    times = {1: [], 2: []}
    # As a user's session would run: torch's default threads in this process
    # (whatever OMP_NUM_THREADS says for the rest of the benchmark).
    with torch_threads(os.cpu_count()):
        for repeat in range(args.repeats + 1):
            for n_jobs in (1, 2):
                search = GridSearchCV(estimator, grid, cv=2, n_jobs=n_jobs)
                seconds = timed(partial(fit_quietly, search, X))
                if repeat:  # the first round starts joblib's workers
                    times[n_jobs].append(seconds)
        worker_threads = Parallel(n_jobs=2)(
            delayed(torch.get_num_threads)() for _ in range(2)
        )
    one, two = statistics.median(times[1]), statistics.median(times[2])
    lines = [
        "### Parallel hyper-parameter search",
        "",
        "`GridSearchCV(GaussianVAE(max_iter=10), 4 candidates, cv=2)` on 2,000 x 20 "
        f"rows; median wall seconds of {args.repeats} (after a first round that "
        f"starts joblib's workers). Torch threads: {os.cpu_count()} in the parent "
        f"(n_jobs=1), {worker_threads} in joblib's two workers (n_jobs=2); "
        f"CPU cores: {os.cpu_count()}.",
        "",
        *table(
            ["n_jobs=1", "n_jobs=2", "speed-up"],
            [[f"{one:.2f}", f"{two:.2f}", f"{one / two:.2f}x"]],
            "rrr",
        ),
    ]
    log(lines[-1])
    return lines
