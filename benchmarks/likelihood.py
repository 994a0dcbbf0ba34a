"""Held-out log-likelihood on tabular data: GaussianVAE against tuned density peers.

Data: scikit-learn's breast cancer, wine (``wine_sklearn``) and diabetes, in
raw units, and every data set in ``../shared/data/anomaly`` (labels ignored).
Columns constant over a data set are dropped; every column with fewer distinct
values than half the rows is dequantized before the split, by adding uniform
noise on [0, gap) where gap is its smallest gap between distinct values (seeded
per data set, the same for every seed), so that no model wins by putting
spikes on repeated values there (columns with more distinct values keep
their point masses). Each seed splits the rows 75/25, keeps at most
8,000 training and 4,000 test rows, and scores the held-out log-likelihood
per row, in nats and in the data's own (dequantized) units. Three seeds by
default, two for campaign and magicgamma. ``--dequantize repeated`` spreads
every repeated value of every column over its gap to the next value, or
its share of the rows times the column's standard deviation where that is
wider, and ``--first-seed`` starts the seeds elsewhere: together, a check
on splits that no default was chosen on, with no point mass (nor a spike
narrower than its share of the column's spread) left in any column
(``--docs-section`` then names where ``--write-docs`` puts it).

Models: the peers of ``_density_peers.py`` (a full Gaussian; GaussianMixture
with its covariance type and components by BIC; KernelDensity and
FactorAnalysis tuned by 3-fold CV;
zuko's neural spline flow with a held-out stopping rule, skipped on data
wider than 100 columns), each fitted on standardized data and scored with the
log-Jacobian; ``GaussianVAE()``, fitted on the raw data, plus named settings
(``--vae NAME=JSON``); and, with ``--main-src PATH``, ``GaussianVAE (main)``:
the default of another checkout, fitted in a child process that imports skvae
from PATH, for a side-by-side fit time. Each run uses ``--torch-threads``
torch threads (1). ``--curves`` also trains the default in chunks of
``--chunk`` epochs with ``warm_start=True`` (at most ``--curve-epochs`` in
all, if given) and reports the fit seconds it takes to come within 0.1
nats/row of the final score of a default fit.

``--synthetic`` runs the same models on data with a known density instead
(``_density_synthetic.py``: q latent variables mapped smoothly into 12
features of mixed scales, isotropic noise; the true log-density by
quadrature, on two grids to show it has converged) and reports each model's
gap to the truth.

    OMP_NUM_THREADS=1 python benchmarks/likelihood.py --runs likelihood.jsonl
        --n-jobs 8 --main-src ../skvae-main --curves --write-docs
    OMP_NUM_THREADS=1 python benchmarks/likelihood.py --synthetic
        --runs likelihood.jsonl --n-jobs 8 --main-src ../skvae-main --write-docs

(``../skvae-main``: a checkout of the main branch to compare with, e.g.
``git worktree add ../skvae-main main``.) ``--data`` and ``--models`` pick
data sets and models; ``--no-run`` only tabulates the runs in ``--runs``,
where each finished (data set, model, seed) is kept as one JSON line and is
not run again (one recorded with other arguments that its result depends on
stops the script). ``--write-docs`` writes the ``likelihood`` (or
``likelihood-synthetic``) block of docs/benchmarks.md.
"""

import functools
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _common as harness
import _density_peers as peers
import numpy as np
from _density_data import (
    FEW_SEEDS,
    prepared,
    real_split,
    synthetic_data,
)
from _density_report import (
    CURVE,
    DEFAULT,
    MAIN,
    failures,
    real_report,
    synthetic_report,
)
from sklearn.exceptions import ConvergenceWarning

from skvae import GaussianVAE


def synthetic_name(args):
    return f"synthetic-q{args.latent}-n{args.synthetic_rows[0]}"


def n_seeds(name, args):
    return min(args.seeds, FEW_SEEDS.get(name, args.seeds))


# ---------------------------------------------------------------- models

# The default of another checkout, in a process of its own: argv is the
# checkout, a .npz file of train and test rows, the seed, the device, threads.
# Warmed up as in warm_up below.
MAIN_CHILD = """
import json, sys, time, warnings
src, path, seed, device, threads = sys.argv[1:]
sys.path.insert(0, src)
import numpy as np, torch
import skvae
torch.set_num_threads(int(threads))
data = np.load(path)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    skvae.GaussianVAE(max_iter=1, device=device).fit(data["train"][:64])
    tic = time.perf_counter()
    model = skvae.GaussianVAE(random_state=int(seed), device=device)
    model.fit(data["train"])
    seconds = time.perf_counter() - tic
    score = float(model.score(data["test"]))
print(json.dumps({"score": score, "seconds": seconds, "n_iter": model.n_iter_,
                  "skvae": skvae.__file__}))
"""


def warm_up(X_train, args):
    """A one-epoch fit on a few rows, so that no timed fit pays first-call costs.

    Done before every timed VAE fit, here and in MAIN_CHILD alike: a fresh
    process would otherwise pay them in the first fit it times.
    """
    GaussianVAE(max_iter=1, device=args.device).fit(X_train[:64])


def fit_main(X_train, X_test, seed, args):
    """Score and fit seconds of the default GaussianVAE of ``args.main_src``."""
    src = args.main_src.resolve()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "data.npz", train=X_train, test=X_test)
        argv = [src, "data.npz", seed, args.device, args.torch_threads]
        result = harness.child_result(
            [sys.executable, "-c", MAIN_CHILD, *map(str, argv)], env=env, cwd=tmp
        )
    if not Path(result["skvae"]).resolve().is_relative_to(src):
        raise RuntimeError(f"skvae came from {result['skvae']}, not {src}")
    return result["score"], result["seconds"], {"n_iter": result["n_iter"]}


def fit_score(model, X_train, X_test, seed, args):
    """(held-out score per row, fit seconds, info) of ``model`` on one split."""
    if model == MAIN:
        return fit_main(X_train, X_test, seed, args)
    tic = time.perf_counter()
    if model in peers.PEERS:
        flow = {"max_epochs": args.flow_max_epochs, "max_seconds": args.flow_seconds}
        settings = flow if model == peers.FLOW else {}
        score_samples, info = peers.fit_peer(model, X_train, seed, **settings)
    else:
        vae = GaussianVAE(random_state=seed, device=args.device, **args.vae[model])
        warm_up(X_train, args)
        tic = time.perf_counter()
        score_samples, info = vae.fit(X_train).score_samples, {}
        info["n_iter"] = vae.n_iter_
    seconds = time.perf_counter() - tic
    return float(np.mean(score_samples(X_test))), seconds, info


def curve(X_train, X_test, seed, args):
    """The default VAE trained in chunks: [epochs, fit seconds, score] per chunk.

    Each chunk is a ``fit`` of ``args.chunk`` epochs with ``warm_start=True``;
    it ends once a chunk converges or the epoch budget is used: the default's
    ``max_iter``, or ``args.curve_epochs`` where given (a curve whose first
    chunks already come close need not run on).
    """
    vae = GaussianVAE(random_state=seed, device=args.device, warm_start=True)
    budget = args.curve_epochs or vae.max_iter
    vae.set_params(max_iter=args.chunk)
    warm_up(X_train, args)
    points, seconds, converged = [], 0.0, False
    while not converged and (not points or points[-1][0] < budget):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            tic = time.perf_counter()
            vae.fit(X_train)
            seconds += time.perf_counter() - tic
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        points.append([vae.n_iter_, seconds, vae.score(X_test)])
    return points[-1][2], seconds, {"points": points, "converged": converged}


def run_one(data, model, seed, args):
    """One JSON line: data set, model, seed, score (None if it failed), seconds, info."""
    if data.startswith("synthetic"):
        X_train, X_test, _ = synthetic_data(args.latent, *args.synthetic_rows)
    else:
        X_train, X_test = real_split(data, seed, args.dequantize)
    try:
        with warnings.catch_warnings(), harness.torch_threads(args.torch_threads):
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit = curve if model == CURVE else functools.partial(fit_score, model)
            score, seconds, info = fit(X_train, X_test, seed, args)
    except Exception as error:  # recorded, so that one failure ends no benchmark
        score, seconds, info = None, None, {"error": f"{type(error).__name__}: {error}"}
    info["n_train"] = len(X_train)
    if not data.startswith("synthetic"):
        info["dequantize"] = args.dequantize
    return [data, model, seed, score, seconds, info]


def other_dequantize_modes(runs, mode):
    """The ``--dequantize`` modes other than ``mode`` recorded in ``runs``.

    The key of a recorded run (data set, model, seed) does not hold the
    mode, so a runs file of one mode must not be resumed or tabulated with
    the other. Records from before the mode was kept are of ``"sparse"``.
    """
    if runs is None or not runs.exists():
        return set()
    modes = set()
    for (data, *_, info), _ in harness.read_runs(runs):
        if not data.startswith("synthetic"):
            modes.add(info.get("dequantize", "sparse"))
    return modes - {mode}


def fingerprint(data, model, seed, args):
    """The arguments beyond the job (data set, model, seed) its result depends on."""
    settings = {"torch_threads": args.torch_threads}
    if data.startswith("synthetic"):
        settings["synthetic_rows"] = args.synthetic_rows
    else:
        settings["dequantize"] = args.dequantize
    if model in args.vae or model in (CURVE, MAIN):
        settings["device"] = args.device
    if model in args.vae:
        settings["params"] = args.vae[model]
    if model == peers.FLOW:
        settings["flow"] = [args.flow_max_epochs, args.flow_seconds]
    if model == CURVE:
        settings["curve"] = [args.chunk, args.curve_epochs]
    return settings


# ------------------------------------------------------------------ main


def parse_args(argv):
    parser = harness.argument_parser(
        __doc__, docs_section="likelihood", runs="", data=True, seeds=3
    )
    add = parser.add_argument
    add("--models", nargs="+", metavar="NAME", help="models (default: all)")
    add(
        "--vae",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a GaussianVAE setting, e.g. 'linear={\"hidden_layer_sizes\": []}'",
    )
    add("--main-src", type=Path, help="a checkout whose default GaussianVAE to add")
    add("--curves", action="store_true", help="time to quality of the default")
    add("--chunk", type=int, default=5, help="epochs per chunk of --curves")
    add(
        "--curve-epochs",
        type=int,
        help="most epochs of a --curves run (default: the default's max_iter)",
    )
    add("--synthetic", action="store_true", help="the synthetic benchmark instead")
    add("--latent", type=int, default=2, help="latent variables of --synthetic")
    add("--synthetic-rows", type=int, nargs=2, default=[4000, 2000])
    add("--grids", type=int, nargs=2, default=[401, 801], help="points per axis")
    add("--flow-max-epochs", type=int, default=peers.FLOW_SETTINGS["max_epochs"])
    add("--flow-seconds", type=float, default=peers.FLOW_SETTINGS["max_seconds"])
    add("--device", default="cpu", help="of the VAEs")
    add("--torch-threads", type=int, default=1)
    add(
        "--first-seed",
        type=int,
        default=0,
        help="seeds first-seed, first-seed + 1, ...",
    )
    add(
        "--dequantize",
        choices=["sparse", "repeated"],
        default="sparse",
        help="which columns get dequantizing noise (see _density_data.prepared)",
    )
    add(
        "--docs-section",
        help="the section of docs/benchmarks.md that --write-docs replaces "
        "(default: likelihood, or likelihood-synthetic)",
    )
    add("--no-run", action="store_true", help="only tabulate the runs in --runs")
    args = parser.parse_args(argv)
    named = dict(setting.split("=", 1) for setting in args.vae)
    args.vae = {DEFAULT: {}} | {
        f"{DEFAULT} {name}": json.loads(kwargs) for name, kwargs in named.items()
    }
    return parser, args


def main(argv=None):
    parser, args = parse_args(argv)
    models = [*peers.PEERS, *args.vae, *([MAIN] if args.main_src else [])]
    if args.curves and not args.synthetic:
        models.append(CURVE)
    if args.models:
        unknown = set(args.models) - set(models)
        if unknown:
            parser.error(f"unknown models {sorted(unknown)}; known: {models}")
        models = [m for m in models if m in args.models]
    if args.synthetic:
        names = [synthetic_name(args)]
    else:
        known = [*harness.SKLEARN, *harness.data_names()]
        if set(args.data or ()) - set(known):
            parser.error(f"unknown data sets; known: {known}")
        names = [d for d in known if d in (args.data or known)]

    other = (
        set() if args.synthetic else other_dequantize_modes(args.runs, args.dequantize)
    )
    if other:
        parser.error(
            f"{args.runs} holds runs with --dequantize {', '.join(sorted(other))}, "
            f"not {args.dequantize}; give each mode its own --runs file"
        )

    def wanted(data, model):
        wide = (
            not args.synthetic
            and prepared(data, args.dequantize)[0].shape[1] > peers.FLOW_MAX_FEATURES
        )
        return not (model == peers.FLOW and wide)

    seeds = {d: args.seeds if args.synthetic else n_seeds(d, args) for d in names}
    jobs = [
        (d, m, seed)
        for seed in range(args.first_seed, args.first_seed + args.seeds)
        for m in models
        for d in names
        if seed - args.first_seed < seeds[d] and wanted(d, m)
    ]
    results = harness.resumable_runs(
        functools.partial(run_one, args=args),
        jobs,
        args.runs,
        args.n_jobs,
        run=not args.no_run,
        fingerprint=functools.partial(fingerprint, args=args),
    )
    if args.synthetic:
        report = synthetic_report(names[0], models, results, args)
    else:
        report = real_report(names, models, results, args)
    failed = failures(results)
    lines = [harness.command(argv), "", *harness.header(args.device), *report]
    if failed:
        lines += ["", "Runs that failed:", "", *failed]
    section = args.docs_section or (
        "likelihood-synthetic" if args.synthetic else "likelihood"
    )
    harness.publish(lines, section, args.write_docs)


if __name__ == "__main__":
    main()
