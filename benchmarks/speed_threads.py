"""Section ``threads`` of speed.py: a default fit with the threads a user has.

Every other benchmark fixes the threads (one torch thread, usually
``OMP_NUM_THREADS=1``) so that its figures compare models, not thread pools.
A user sets none of that: torch, and the BLAS under numpy and scikit-learn,
each start one thread per core. This fits ``GaussianVAE(random_state=0)`` on
the training rows of real data sets (those of benchmarks/likelihood.py,
seed 0) in a fresh process twice: with the environment as it is, minus any
thread variable (the default), and with every thread variable set to 1. The
target: the default no slower than one thread (ratio at most about 1.25:
threads cost a little on small data). Run it under ``OMP_NUM_THREADS=1``,
as the other sections: the children drop the thread variables themselves.

    OMP_NUM_THREADS=1 python benchmarks/speed.py --sections threads
        [--threads-data breast_cancer cardio fault thyroid magicgamma]
        [--write-docs]

The child (this file run as a script) prints the fit seconds, the held-out
score, and the thread counts it ran with; the table gives the two fits'
held-out scores' difference (threads may sum in another order).
"""

import json
import os
import sys
import time

from _common import child_result, table_head, table_row

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
DATA = ["breast_cancer", "cardio", "fault", "thyroid", "magicgamma"]


def child(name):
    """Fit seconds and held-out score of the default GaussianVAE on ``name``."""
    import torch
    from _density_data import real_split
    from threadpoolctl import threadpool_info

    import skvae

    X_train, X_test = real_split(name, 0)
    model = skvae.GaussianVAE(random_state=0)
    start = time.perf_counter()
    model.fit(X_train)
    seconds = time.perf_counter() - start
    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    return {
        "seconds": seconds,
        "score": model.score(X_test),
        "rows": X_train.shape[0],
        "features": X_train.shape[1],
        "torch": torch.get_num_threads(),
        "blas": max(blas, default=0),
        "skvae": skvae.__file__,
    }


def in_child(name, one_thread):
    """:func:`child` in a fresh process, with one thread or the default."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if one_thread:
        env.update(dict.fromkeys(THREAD_VARIABLES, "1"))
    return child_result([sys.executable, __file__, name], env=env)


def run(args, log):
    lines = [
        "### Threads: a default fit as a user runs it",
        "",
        "`GaussianVAE(random_state=0).fit` on the seed-0 training rows of "
        "benchmarks/likelihood.py, each fit in a fresh process: with no thread "
        "variable set (torch's and the BLAS's default, one thread per core) and "
        "with every thread variable set to 1. Each child sets its own threads "
        "(the column gives the default's), whatever the header above says of "
        "the parent. Fit seconds; target: the default at most about 1.25x one "
        "thread.",
        "",
        *table_head(
            [
                "data set",
                "rows x D",
                "default threads (torch, BLAS)",
                "default s",
                "one thread s",
                "ratio",
                "score difference",
            ],
            "llrrrrr",
        ),
    ]
    ratios = []
    for name in args.threads_data:
        default = in_child(name, one_thread=False)
        single = in_child(name, one_thread=True)
        log(f"{name}: skvae from {default['skvae']}")
        line = table_row(
            [
                name,
                f"{default['rows']} x {default['features']}",
                f"{default['torch']}, {default['blas']}",
                f"{default['seconds']:.1f}",
                f"{single['seconds']:.1f}",
                f"{default['seconds'] / single['seconds']:.2f}",
                f"{abs(default['score'] - single['score']):.1e}",
            ]
        )
        log(line)
        lines.append(line)
        ratios.append((default["seconds"] / single["seconds"], name))
    low, high = min(ratios), max(ratios)
    summary = (
        f"Over {len(ratios)} data sets the default took {low[0]:.2f} ({low[1]}) "
        f"to {high[0]:.2f} ({high[1]}) times as long as one thread."
    )
    log(summary)
    lines += ["", summary]
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    print(json.dumps(child(sys.argv[1])))
