"""Training and scoring speed, memory and scale of GaussianVAE.

Measures, in one run and side by side, for n rows x D features:

- ``fit`` throughput (training rows per second, setup excluded) of
  ``GaussianVAE`` against a minimal raw PyTorch loop of the same network
  (64-64 MLPs, the same latent size, batch size, fused Adam and epochs;
  tensors in memory, ``torch.randperm`` batches, no DataLoader), and against
  PyOD's VAE when pyod is installed (``pip install .[benchmark]``);
- the same comparison epoch by epoch in one process (``parity``: one epoch
  of each loop in turn, so load from elsewhere hits both alike);
- ``score_samples`` and ``transform`` throughput;
- peak resident memory of ``fit``, each in a fresh subprocess;
- linearity of ``score_samples`` in rows and in ``n_importance_samples``;
- time to quality for ``batch_size="auto"`` against fixed batch sizes;
- ``GridSearchCV`` wall time with ``n_jobs=1`` and ``n_jobs=2``.

Setup is excluded from the fit throughput by differencing: a fit of
``E + k`` epochs minus a fit of ``E`` epochs (same data, seed and settings)
leaves the time of ``k`` epochs, with validation, standardization, the
final variance pass and first-call warm-up cancelled out (``k`` grows at small
n so that enough rows are timed). The raw loop and
PyOD's VAE are timed the same way. The runs of the competitors are
interleaved within each repeat, so that load from other processes hits them
alike; the ratios are the robust figures, the absolute rates depend on the
machine. Each table is written into docs/benchmarks.md between the
``<!-- BEGIN speed -->`` and ``<!-- END speed -->`` markers.

    python benchmarks/speed.py [--n 1e4 1e5 1e6] [--d 20 100] [--repeats 3]
        [--device cpu] [--warmup-epochs 1] [--min-rows 200000] [--sections fit parity memory linearity quality search]
        [--budget 240] [--quality-budget 40] [--quality-seeds 3] [--n-jobs 1] [--no-write]
"""

import argparse
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from torch import nn

from skvae import GaussianVAE
from skvae._base import auto_batch_size

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
HIDDEN = (64, 64)
LATENT = 8
SCORE_ROWS = 20_000
TRANSFORM_ROWS = 200_000


def synthetic(n_samples, n_features, seed=0):
    """Rows near a curved 2-d manifold, float32, built in place chunk by chunk.

    Generated in chunks so that no temporary larger than a chunk exists: the
    memory baseline taken after this call is then the true one.
    """
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((2, n_features)).astype(np.float32)
    B = rng.standard_normal((n_features, n_features)).astype(np.float32)
    B /= np.sqrt(n_features)
    X = np.empty((n_samples, n_features), dtype=np.float32)
    for start in range(0, n_samples, 65536):
        rows = min(65536, n_samples - start)
        z = rng.standard_normal((rows, 2), dtype=np.float32)
        X[start : start + rows] = np.tanh(z @ A) @ B * 3.0 + 10.0
        X[start : start + rows] += 0.1 * rng.standard_normal(
            (rows, n_features), dtype=np.float32
        )
    return X


def vae(batch_size, epochs, device, **params):
    return GaussianVAE(
        n_components=LATENT,
        hidden_layer_sizes=HIDDEN,
        batch_size=batch_size,
        max_iter=epochs,
        n_iter_no_change=max(epochs, 1),
        tol=0.0,
        device=device,
        random_state=0,
        **params,
    )


def timed(fn):
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def fit_vae(X, batch_size, epochs, device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return timed(lambda: vae(batch_size, epochs, device).fit(X))


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


def fit_vae_epochs(X, batch_size, shorter, longer, device):
    """Seconds of ``longer - shorter`` epochs of fit: two fits differenced."""
    return fit_vae(X, batch_size, longer, device) - fit_vae(
        X, batch_size, shorter, device
    )


def raw_setup(X, device):
    """The hand-written loop's state: standardized data on the device, model, Adam."""
    torch.manual_seed(0)
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
    """Seconds for ``epochs - warmup_epochs`` epochs of a hand-written loop.

    The data are standardized and moved to the device once; the first
    ``warmup_epochs`` epochs are not timed, as the differencing does for the
    estimator.
    """
    data, model, optimizer = raw_setup(X, device)
    tic = None
    for epoch in range(epochs):
        if epoch == warmup_epochs:
            synchronize(device)
            tic = time.perf_counter()
        raw_epoch(data, model, optimizer, batch_size, device)
    synchronize(device)
    return time.perf_counter() - tic


def fit_pyod(X, batch_size, epochs, device):
    from pyod.models.vae import VAE

    model = VAE(
        epoch_num=epochs,
        batch_size=batch_size,
        encoder_neuron_list=list(HIDDEN),
        decoder_neuron_list=list(HIDDEN[::-1]),
        latent_dim=LATENT,
        dropout_rate=0.0,
        optimizer_params={"weight_decay": 0.0},
        device=device,
        verbose=0,
    )
    return timed(lambda: model.fit(X))


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def have_pyod():
    try:
        import pyod.models.vae  # noqa: F401
    except ImportError:
        return False
    return True


def rows_per_s(rows, seconds):
    return rows / seconds if seconds > 0 else math.inf


# ---------------------------------------------------------------- sections


def fit_section(args, log):
    """Fit throughput against the raw loop and PyOD; scoring throughput."""
    e1 = args.warmup_epochs
    lines = [
        "### Fit, score_samples and transform throughput",
        "",
        "Rows per second (median of the repeats); fit: a fit of "
        f"{e1} epoch(s) subtracted from one of {e1} + k epochs, k = max(2, "
        f"{args.min_rows:,} / n), so setup is excluded; batch size from "
        '`batch_size="auto"`'
        f" for all; score_samples at the default 64 importance draws on up to "
        f"{SCORE_ROWS:,} rows, transform on up to {TRANSFORM_ROWS:,} rows.",
        "",
        "| n | D | batch | repeats | fit (GaussianVAE) | fit (raw loop) | VAE / raw | "
        "fit (PyOD VAE) | VAE / PyOD | score_samples | transform |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pyod = have_pyod() and not args.no_pyod
    rates = {}
    skipped = []
    for n in args.n:
        for d in args.d:
            batch = auto_batch_size(n)
            # Enough timed epochs that small data sets are not all noise.
            e2 = e1 + max(2, math.ceil(args.min_rows / n))
            X = synthetic(n, d)
            fit_vae(X[:1000], batch, 1, args.device)  # first-call costs
            measure_pyod = (
                pyod
                and estimate(rates, "pyod", n, d) * n * (e2 + e1) * args.repeats
                < args.budget
            )
            # Seconds per repeat, from the rate at the largest smaller n: big
            # sizes get fewer repeats, and are skipped past twice the budget.
            estimated = estimate(rates, "vae", n, d) * n * (2 * e2 + e1)
            if estimated > 2 * args.budget:
                skipped.append(f"n={n:,}, D={d}: fit (estimated {estimated:.0f} s)")
                continue
            repeats = max(1, min(args.repeats, int(args.budget // max(estimated, 1))))
            if pyod and not measure_pyod:
                skipped.append(f"n={n:,}, D={d}: PyOD's VAE (too slow)")
            vae_s, raw_s, pyod_s = [], [], []
            for _ in range(repeats):
                vae_s.append(fit_vae_epochs(X, batch, e1, e2, args.device))
                raw_s.append(fit_raw(X, batch, e1, e2, args.device))
                if measure_pyod:
                    pyod_s.append(
                        fit_pyod(X, batch, e2, args.device)
                        - fit_pyod(X, batch, e1, args.device)
                    )
            rows = n * (e2 - e1)
            vae_rate = rows_per_s(rows, statistics.median(vae_s))
            raw_rate = rows_per_s(rows, statistics.median(raw_s))
            rates[("vae", n, d)] = vae_rate
            ratios = [r / v for v, r in zip(vae_s, raw_s, strict=True)]
            pyod_cells = ["-", "-"]
            if pyod_s:
                pyod_rate = rows_per_s(rows, statistics.median(pyod_s))
                rates[("pyod", n, d)] = pyod_rate
                pyod_cells = [f"{pyod_rate:,.0f}", f"{vae_rate / pyod_rate:.1f}x"]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = vae(batch, 1, args.device).fit(X)
            score_X, transform_X = X[:SCORE_ROWS], X[:TRANSFORM_ROWS]
            score_rate = rows_per_s(
                len(score_X),
                statistics.median(
                    timed(lambda: model.score_samples(score_X))  # noqa: B023
                    for _ in range(repeats)
                ),
            )
            transform_rate = rows_per_s(
                len(transform_X),
                statistics.median(
                    timed(lambda: model.transform(transform_X))  # noqa: B023
                    for _ in range(repeats)
                ),
            )
            line = (
                f"| {n:,} | {d} | {batch} | {repeats} | {vae_rate:,.0f} | {raw_rate:,.0f} | "
                f"{statistics.median(ratios):.2f} | {' | '.join(pyod_cells)} | "
                f"{score_rate:,.0f} | {transform_rate:,.0f} |"
            )
            log(line)
            lines.append(line)
    lines += skipped_lines(skipped)
    return lines


def estimate(rates, what, n, d):
    """Seconds per row at (n, d), from the largest smaller size measured."""
    known = [(k[1], v) for k, v in rates.items() if k[0] == what and k[2] == d]
    known = [(m, v) for m, v in known if m < n]
    if not known:
        return 0.0
    return 1.0 / max(known)[1]


def skipped_lines(skipped):
    if not skipped:
        return []
    return [
        "",
        "Skipped (would not finish within the budget): " + "; ".join(skipped) + ".",
    ]


def peak_rss():
    """Peak resident memory of this process, in bytes.

    Linux's ``VmHWM`` where there is one: ``ru_maxrss`` survives ``exec``, so
    in a child started by a large parent it would report the parent's size.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_child(n, d, batch, device, what):
    """Peak RSS of one fit over the baseline after imports and data, in bytes."""
    X = synthetic(n, d)
    # The baseline is the process after imports and X, as a user's would be.
    baseline = peak_rss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if what == "vae":
            model = vae(batch, 1, device).fit(X)
            n_params = sum(p.numel() for p in model.module_.parameters())
        else:
            fit_raw(X, batch, 0, 1, device)
            n_params = sum(p.numel() for p in RawVAE(d).parameters())
    peak = peak_rss()
    return {"extra": peak - baseline, "X": X.nbytes, "model": 4 * n_params}


def memory_section(args, log):
    lines = [
        "### Peak memory of fit",
        "",
        "Peak resident memory (`VmHWM`, else `ru_maxrss`) of one epoch of `fit` in a fresh "
        "process, minus the process's peak after imports and after building X "
        "(float32), in MB; the target is at most about 2x (float32 X + model). "
        "The raw loop's standardized copy of X is shown for reference.",
        "",
        "| n | D | float32 X + model | fit (GaussianVAE) | ratio | fit (raw loop) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in args.n:
        for d in args.d:
            result = {}
            for what in ("vae", "raw"):
                command = [
                    sys.executable,
                    __file__,
                    "--memory-child",
                    json.dumps([n, d, auto_batch_size(n), args.device, what]),
                ]
                out = subprocess.run(
                    command, check=True, capture_output=True, text=True
                )
                result[what] = json.loads(out.stdout.strip().splitlines()[-1])
            base = result["vae"]["X"] + result["vae"]["model"]
            line = (
                f"| {n:,} | {d} | {base / 1e6:,.1f} | "
                f"{result['vae']['extra'] / 1e6:,.1f} | "
                f"{result['vae']['extra'] / base:.2f} | "
                f"{result['raw']['extra'] / 1e6:,.1f} |"
            )
            log(line)
            lines.append(line)
    return lines


def linearity_section(args, log):
    """score_samples time against rows and against importance draws."""
    n, d = 10_000, min(args.d)
    X = synthetic(4 * n, d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = vae("auto", 5, args.device).fit(X[:n])
    lines = [
        "### score_samples linearity",
        "",
        f"Model fitted on {n:,} rows, D={d}; median seconds of {args.repeats} "
        "calls and microseconds per row and draw (constant when linear).",
        "",
        "| rows | n_importance_samples | seconds | us per row x draw |",
        "|---:|---:|---:|---:|",
    ]
    cases = [(r, 64) for r in (2_500, 5_000, 10_000, 20_000)]
    cases += [(5_000, k) for k in (16, 128, 256)]
    for rows, draws in cases:
        model.set_params(n_importance_samples=draws)
        seconds = statistics.median(
            timed(lambda: model.score_samples(X[:rows]))  # noqa: B023
            for _ in range(args.repeats)
        )
        line = (
            f"| {rows:,} | {draws} | {seconds:.3f} | "
            f"{1e6 * seconds / (rows * draws):.3f} |"
        )
        log(line)
        lines.append(line)
    return lines


def quality_curve(X_train, X_test, batch, epochs, every, device, seed):
    """Held-out log-likelihood every ``every`` epochs, up to ``epochs``.

    Returns (epoch, score) pairs; the model trains with ``warm_start``.
    """
    torch.set_num_threads(1)
    model = vae(batch, every, device, warm_start=True, n_importance_samples=16)
    model.set_params(random_state=seed, n_iter_no_change=10**9)
    curve = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for epoch in range(every, epochs + 1, every):
            model.fit(X_train)
            curve.append((epoch, model.score(X_test)))
    return curve


def quality_section(args, log):
    """Time until held-out log-likelihood is within 0.01 nats/feature of converged.

    Every batch size gets the same training time, ``--quality-budget``
    seconds: its epoch time is measured first (alone, by differencing as for
    the throughput), then each of ``--quality-seeds`` seeds trains for the
    number of epochs that fill the budget (``warm_start``), scoring held-out
    rows about 60 times along the way (the curves run in parallel,
    ``--n-jobs``, one torch thread each). The converged value is the best
    over batch sizes and seeds of a run's final held-out log-likelihood
    (median of its last five scores); the time to it is the first epoch
    scored within 0.01 nats/feature of it times the epoch time.
    """
    n, d, n_test = args.quality_n, 20, 2_000
    seeds = range(args.quality_seeds)
    X = synthetic(n + n_test, d, seed=1)
    X_train, X_test = X[:n], X[n:]
    sizes = ["auto", 64, 128, 256, 1024, 4096]
    batch = {s: auto_batch_size(n) if s == "auto" else s for s in sizes}
    fit_vae(X_train, batch["auto"], 1, args.device)  # first-call warm-up
    epoch_time = {
        size: statistics.median(
            fit_vae_epochs(X_train, batch[size], 1, 4, args.device) / 3
            for _ in range(args.repeats)
        )
        for size in sizes
    }
    epochs, every = {}, {}
    for size in sizes:
        every[size] = max(1, math.ceil(args.quality_budget / epoch_time[size] / 60))
        epochs[size] = every[size] * max(
            1, round(args.quality_budget / epoch_time[size] / every[size])
        )
    jobs = [(size, seed) for size in sizes for seed in seeds]
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
        f"seconds per epoch (differenced fits, median of {args.repeats}); "
        "medians over the seeds that reached the target.",
        "",
        "| batch size | s per epoch | epochs run | seeds reaching target | "
        "epochs to target (median) | s to target (median) | held-out "
        "nats/feature at the end (mean) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for line in lines:
        log(line)
    for size in sizes:
        reached = []
        for seed in seeds:
            epoch = next((e for e, v in curves[size, seed] if v >= target), None)
            if epoch is not None:
                reached.append(epoch)
        name = f"auto ({batch[size]})" if size == "auto" else str(size)
        if reached:
            median = statistics.median(reached)
            to_target = f"{median:g} | {median * epoch_time[size]:.2f}"
        else:
            to_target = f"> {epochs[size]} | > {epochs[size] * epoch_time[size]:.2f}"
        final = statistics.mean(
            statistics.median(v for _, v in curves[size, seed][-5:]) for seed in seeds
        )
        line = (
            f"| {name} | {epoch_time[size]:.3f} | {epochs[size]} | "
            f"{len(reached)}/{len(seeds)} | {to_target} | {final / d:.3f} |"
        )
        log(line)
        lines.append(line)
    return lines


def search_section(args, log):
    """GridSearchCV wall time, n_jobs=1 against n_jobs=2."""
    X = synthetic(2_000, 20, seed=2)
    grid = {"n_components": [2, 4], "hidden_layer_sizes": [(32,), (64, 64)]}
    estimator = GaussianVAE(max_iter=10, random_state=0, device=args.device)
    times = {1: [], 2: []}
    # As a user's session would run: torch's default threads in this process
    # (whatever OMP_NUM_THREADS says for the rest of the benchmark).
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count())
    try:
        for repeat in range(args.repeats + 1):
            for n_jobs in (1, 2):
                search = GridSearchCV(estimator, grid, cv=2, n_jobs=n_jobs)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    seconds = timed(lambda: search.fit(X))  # noqa: B023
                if repeat:  # the first round starts joblib's workers
                    times[n_jobs].append(seconds)
        worker_threads = Parallel(n_jobs=2)(
            delayed(torch.get_num_threads)() for _ in range(2)
        )
    finally:
        torch.set_num_threads(threads)
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
        "| n_jobs=1 | n_jobs=2 | speed-up |",
        "|---:|---:|---:|",
        f"| {one:.2f} | {two:.2f} | {one / two:.2f}x |",
    ]
    log(lines[-1])
    return lines


def parity_case(n, d, args):
    """Per-round epoch seconds of the estimator's loop and the raw loop."""
    from skvae._training import TrainingConfig, TrainingHistory, train

    device = torch.device(args.device)
    X = synthetic(n, d)
    batch = auto_batch_size(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = vae(batch, 1, args.device).fit(X)
    data, raw, raw_optimizer = raw_setup(X, device)
    config = TrainingConfig(
        batch_size=batch,
        max_iter=10**9,
        beta=1.0,
        kl_warmup=0,
        early_stopping=False,
        n_iter_no_change=10**9,
        tol=0.0,
        verbose=0,
    )
    history = TrainingHistory()

    def vae_epoch():
        train(model.module_, model._optimizer, data, None, 1, config, history, 0)

    def raw_loop_epoch():
        raw_epoch(data, raw, raw_optimizer, batch, device)

    def seconds(epoch):
        synchronize(device)
        tic = time.perf_counter()
        epoch()
        synchronize(device)
        return time.perf_counter() - tic

    vae_epoch(), raw_loop_epoch()  # warm-up
    rounds = max(args.repeats, math.ceil(args.min_rows * 5 / n))
    vae_t, raw_t = [], []
    for r in range(rounds):
        if r % 2 == 0:
            vae_t.append(seconds(vae_epoch))
            raw_t.append(seconds(raw_loop_epoch))
        else:
            raw_t.append(seconds(raw_loop_epoch))
            vae_t.append(seconds(vae_epoch))
    return batch, vae_t, raw_t


def parity_section(args, log):
    """Epoch time of the estimator's training loop against the raw loop.

    In one process, on the same data, one epoch of each loop in turn (the
    order alternating between rounds), ``max(--repeats, 5 x --min-rows / n)``
    rounds: a drift or a burst of load from elsewhere then hits both loops
    alike, which the differenced whole fits of the fit section cannot ensure
    on a shared machine. The estimator's loop is ``skvae._training.train`` on
    the module and optimiser that ``fit`` built, with everything it does per
    epoch (rollback snapshot, finiteness check, closed-form variance,
    stopping rule); the raw loop is the fit section's.
    """
    lines = [
        "### Training-loop parity",
        "",
        "One epoch of GaussianVAE's training loop (the module and optimiser "
        "that fit built, with its per-epoch bookkeeping) and one of the raw "
        "loop, in turn in one process on the same standardized data, the "
        "order alternating between rounds. Speed ratio = raw epoch time / "
        "GaussianVAE epoch time, median over rounds (1 = parity).",
        "",
        "| n | D | batch | rounds | epoch (GaussianVAE) ms | epoch (raw loop) ms "
        "| VAE / raw (median of rounds) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for line in lines:
        log(line)
    for n in args.n:
        for d in args.d:
            batch, vae_t, raw_t = parity_case(n, d, args)
            ratio = statistics.median(r / v for r, v in zip(raw_t, vae_t, strict=True))
            line = (
                f"| {n:,} | {d} | {batch} | {len(vae_t)} | "
                f"{1e3 * statistics.median(vae_t):.1f} | "
                f"{1e3 * statistics.median(raw_t):.1f} | {ratio:.2f} |"
            )
            log(line)
            lines.append(line)
    return lines


SECTIONS = {
    "fit": fit_section,
    "parity": parity_section,
    "memory": memory_section,
    "linearity": linearity_section,
    "quality": quality_section,
    "search": search_section,
}


def header(args):
    device = torch.device(args.device)
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    pyod = "not installed"
    if have_pyod():
        import pyod as pyod_module

        pyod = pyod_module.__version__
    return [
        f"Versions: skvae {__import__('skvae').__version__}, torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, pyod {pyod}, "
        f"Python {platform.python_version()}.",
        "",
        f"Machine: {platform.system()} {platform.release()}, {machine}, device "
        f"{args.device}, torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}.",
        "",
    ]


def write_section(header, tables):
    """Replace the tables just measured (by title) in docs/benchmarks.md.

    Tables from earlier runs of other sections are kept, each with the
    command that produced it; the versions and machine are this run's.
    """
    begin, end = "<!-- BEGIN speed -->", "<!-- END speed -->"
    head, rest = DOC.read_text().split(begin)
    old, tail = rest.split(end)
    blocks = {}
    for block in re.split(r"\n(?=### )", old):
        if block.startswith("### "):
            blocks[block.splitlines()[0]] = block.strip("\n")
    for table in tables:
        blocks[table[0]] = "\n".join(table).strip("\n")
    body = "\n".join(header) + "\n" + "\n\n".join(blocks.values())
    DOC.write_text(head + begin + "\n" + body + "\n" + end + tail)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--d", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--warmup-epochs",
        type=int,
        default=1,
        help="epochs of the shorter fit subtracted from the longer one",
    )
    parser.add_argument(
        "--min-rows",
        type=int,
        default=200_000,
        help="rows timed per fit at least (more epochs at small n)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=240.0,
        help="seconds a measurement may take (estimated from smaller sizes) before it is skipped",
    )
    parser.add_argument("--no-pyod", action="store_true")
    parser.add_argument("--quality-n", type=int, default=20_000)
    parser.add_argument(
        "--quality-budget",
        type=float,
        default=40.0,
        help="seconds of training per batch size and seed in the time to quality",
    )
    parser.add_argument("--quality-seeds", type=int, default=3)
    parser.add_argument(
        "--n-jobs",
        type=int,
        default=1,
        help="processes for the time-to-quality curves (one torch thread each)",
    )
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(*json.loads(args.memory_child))))
        return
    args.n = [int(n) for n in args.n]

    def log(line):
        print(line, flush=True)

    command = "Command: `" + " ".join(["python", *sys.argv]) + "`"
    lines = header(args)
    for line in [command, "", *lines]:
        log(line)
    tables = []
    for name in args.sections:
        table = SECTIONS[name](args, log)
        tables.append([table[0], "", command, *table[1:]])
    if not args.no_write:
        write_section(lines, tables)


if __name__ == "__main__":
    main()
