"""Section ``parity`` of speed.py: epoch time of GaussianVAE's loop against the raw loop.

In one process, on the same data, GaussianVAE and the hand-written loop
(``_raw_loop.py``) take turns, the order rotating between rounds,
``max(--repeats, 5 x --min-rows / n)`` rounds: a drift or a burst of load from
elsewhere then hits both alike, which the differenced whole fits of the fit
section cannot ensure on a shared machine.

Through the public API only: each round times a ``fit`` with
``warm_start=True`` of one epoch and one of two epochs on the model fitted
before. Each call also validates X, copies it standardized to the device, runs
a pass over all rows that fixes the decoder variance and sets the fitted
attributes; the difference of the two calls is one epoch of the training loop
with all it does per epoch (rollback snapshot, finiteness check, closed-form
variance, stopping rule) and without that per-call overhead.

    python benchmarks/speed.py --sections parity [--n 1e4 1e5 1e6] [--d 20 100]
        [--repeats 3] [--min-rows 200000] [--device cpu] [--write-docs]
"""

import math
import statistics
import time
from functools import partial

import torch
from _common import seeded_torch, table_head, table_row
from _raw_loop import raw_epoch, raw_setup
from _speed import auto_fit, fit_quietly, synchronize, synthetic


def seconds(fn, device):
    synchronize(device)
    tic = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - tic


def parity_case(n, d, args):
    """Batch size and per-round seconds of the 1- and 2-epoch fits and the raw epoch."""
    device = torch.device(args.device)
    X = synthetic(n, d)
    model = auto_fit(X, args.device)
    batch = model.batch_size_
    model.set_params(warm_start=True, n_iter_no_change=10**9)

    def vae_epochs(epochs):
        fit_quietly(model.set_params(max_iter=epochs), X)

    with seeded_torch(0, device):
        data, raw, raw_optimizer = raw_setup(X, device)
        runs = {
            1: partial(vae_epochs, 1),
            2: partial(vae_epochs, 2),
            "raw": partial(raw_epoch, data, raw, raw_optimizer, batch, device),
        }
        for fn in runs.values():  # warm-up
            fn()
        order = list(runs)
        times = {key: [] for key in runs}
        for _ in range(max(args.repeats, math.ceil(args.min_rows * 5 / n))):
            for key in order:
                times[key].append(seconds(runs[key], device))
            order = order[1:] + order[:1]
    return batch, times


def run(args, log):
    """Epoch time of the estimator's training loop against the raw loop."""
    lines = [
        "### Training-loop parity",
        "",
        "One epoch of GaussianVAE's training loop and one of the raw loop, in "
        "turn in one process on the same data, the order rotating between "
        "rounds. GaussianVAE's epoch: a `fit` with `warm_start=True` of two "
        "epochs minus one of one epoch, in the same round, so the per-call "
        "overhead (validation, the standardized copy of X on the device, the "
        "pass that fixes the decoder variance, the fitted attributes) cancels. "
        "Speed ratio = raw epoch time / "
        "GaussianVAE epoch time, median over rounds (1 = parity).",
        "",
        *table_head(
            [
                "n",
                "D",
                "batch",
                "rounds",
                "epoch (GaussianVAE) ms",
                "epoch (raw loop) ms",
                "VAE / raw (median of rounds)",
            ],
            "r" * 7,
        ),
    ]
    for line in lines:
        log(line)
    for n in args.n:
        for d in args.d:
            batch, times = parity_case(n, d, args)
            epoch = [b - a for a, b in zip(times[1], times[2], strict=True)]
            ratio = statistics.median(
                r / e for r, e in zip(times["raw"], epoch, strict=True)
            )
            line = table_row(
                [
                    f"{n:,}",
                    d,
                    batch,
                    len(epoch),
                    f"{1e3 * statistics.median(epoch):.1f}",
                    f"{1e3 * statistics.median(times['raw']):.1f}",
                    f"{ratio:.2f}",
                ]
            )
            log(line)
            lines.append(line)
    return lines
