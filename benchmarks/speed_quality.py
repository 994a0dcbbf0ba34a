"""Section ``quality`` of speed.py: time to quality of ``batch_size="auto"`` against fixed sizes.

Every batch size gets the same training time, ``--quality-budget`` seconds:
its epoch time is measured first (alone, by differencing as for the
throughput), then each of ``--quality-seeds`` seeds trains for the number of
epochs that fill the budget (``warm_start``), scoring held-out rows about 60
times along the way (the curves run in parallel, ``--n-jobs``, one torch
thread each). The converged value is the best over batch sizes and seeds of a
run's final held-out log-likelihood (median of its last five scores); the time
to it is the first epoch scored within 0.01 nats/feature of it times the epoch
time.

    python benchmarks/speed.py --sections quality [--quality-n 20000]
        [--quality-budget 40] [--quality-seeds 3] [--n-jobs 1] [--repeats 3]
        [--device cpu] [--write-docs]
"""

import math
import statistics
import warnings

from _common import table_head, table_row, torch_threads
from _speed import auto_fit, fit_quietly, fit_vae_epochs, synthetic, vae
from joblib import Parallel, delayed

SIZES = ("auto", 64, 128, 256, 1024, 4096)
# The least seconds per epoch taken: differenced fits can come out about 0
# or negative where an epoch is too short to time (small --quality-n).
MIN_EPOCH_SECONDS = 1e-3


def quality_curve(X_train, X_test, batch, epochs, every, device, seed):
    """Held-out log-likelihood every ``every`` epochs, up to ``epochs``.

    Returns (epoch, score) pairs; the model trains with ``warm_start``, on
    one torch thread.
    """
    model = vae(batch, every, device, warm_start=True, n_importance_samples=16)
    model.set_params(random_state=seed, n_iter_no_change=10**9)
    curve = []
    with torch_threads(1):
        for epoch in range(every, epochs + 1, every):
            fit_quietly(model, X_train)
            curve.append((epoch, model.score(X_test)))
    return curve


def epoch_seconds(X_train, batch_size, args):
    """Seconds per epoch: differenced fits, median of ``args.repeats``, clamped."""
    seconds = statistics.median(
        fit_vae_epochs(X_train, batch_size, 1, 4, args.device) / 3
        for _ in range(args.repeats)
    )
    if seconds < MIN_EPOCH_SECONDS:
        warnings.warn(
            f"batch size {batch_size}: an epoch timed {seconds:.2g} s, too short to "
            f"time; taken as {MIN_EPOCH_SECONDS:g} s (a larger --quality-n times "
            "it)",
            stacklevel=2,
        )
    return max(seconds, MIN_EPOCH_SECONDS)


def run(args, log):
    """Time until held-out log-likelihood is within 0.01 nats/feature of converged."""
    n, d, n_test = args.quality_n, 20, 2_000
    seeds = range(args.quality_seeds)
    X = synthetic(n + n_test, d, seed=1)
    X_train, X_test = X[:n], X[n:]
    # Also the first-call warm-up.
    auto = auto_fit(X_train, args.device).batch_size_
    batch = {s: auto if s == "auto" else s for s in SIZES}
    epoch_time = {size: epoch_seconds(X_train, batch[size], args) for size in SIZES}
    epochs, every = {}, {}
    for size in SIZES:
        every[size] = max(1, math.ceil(args.quality_budget / epoch_time[size] / 60))
        epochs[size] = every[size] * max(
            1, round(args.quality_budget / epoch_time[size] / every[size])
        )
    jobs = [(size, seed) for size in SIZES for seed in seeds]
    curves = dict(
        zip(
            jobs,
            Parallel(n_jobs=args.n_jobs)(
                delayed(quality_curve)(
                    X_train,
                    X_test,
                    batch[size],
                    epochs[size],
                    every[size],
                    args.device,
                    seed,
                )
                for size, seed in jobs
            ),
            strict=True,
        )
    )
    converged = max(statistics.median(v for _, v in c[-5:]) for c in curves.values())
    target = converged - 0.01 * d
    lines = [
        "### Time to quality",
        "",
        f"{n:,} training rows, D={d}, {n_test:,} held-out rows scored about "
        "60 times along each run (16 importance draws); every batch size "
        f"trains for the same time, about {args.quality_budget:g} s, "
        f"{len(seeds)} seeds each. Converged value: {converged / d:.3f} "
        "nats/feature (the best final value over batch sizes and seeds); "
        "target: within 0.01 nats/feature of it. Time = epochs to target x "
        f"seconds per epoch (differenced fits, median of {args.repeats}, at "
        f"least {MIN_EPOCH_SECONDS:g} s); "
        "medians over the seeds that reached the target.",
        "",
        *table_head(
            [
                "batch size",
                "s per epoch",
                "epochs run",
                "seeds reaching target",
                "epochs to target (median)",
                "s to target (median)",
                "held-out nats/feature at the end (mean)",
            ],
            "lrrrrrr",
        ),
    ]
    for line in lines:
        log(line)
    for size in SIZES:
        reached = []
        for seed in seeds:
            epoch = next((e for e, v in curves[size, seed] if v >= target), None)
            if epoch is not None:
                reached.append(epoch)
        if reached:
            median = statistics.median(reached)
            to_target = [f"{median:g}", f"{median * epoch_time[size]:.2f}"]
        else:
            to_target = [
                f"> {epochs[size]}",
                f"> {epochs[size] * epoch_time[size]:.2f}",
            ]
        final = statistics.mean(
            statistics.median(v for _, v in curves[size, seed][-5:]) for seed in seeds
        )
        line = table_row(
            [
                f"auto ({batch[size]})" if size == "auto" else size,
                f"{epoch_time[size]:.3f}",
                epochs[size],
                f"{len(reached)}/{len(seeds)}",
                *to_target,
                f"{final / d:.3f}",
            ]
        )
        log(line)
        lines.append(line)
    return lines
