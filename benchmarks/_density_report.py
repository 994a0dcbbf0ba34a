"""The tables of benchmarks/likelihood.py, from its recorded runs.

Each run is a list ``[data set, model, seed, score, fit seconds, info]``;
score is None for a run that failed (info["error"] says why). A run whose
score is not finite counts as failed too: no table averages it, and the
failures are listed under the tables.

Not a script: imported by benchmarks/likelihood.py.
"""

import math
import statistics
from collections import defaultdict

import _common as harness
import _density_peers as peers
import _density_synthetic as synthetic
import numpy as np
from _density_data import FEW_SEEDS, MAX_TEST, MAX_TRAIN, prepared, synthetic_data

DEFAULT, MAIN, CURVE = "GaussianVAE", "GaussianVAE (main)", "GaussianVAE curve"
LARGE = 2000  # rows; the flow target counts data sets at least this large
WITHIN = 0.1  # nats/row: "close to the final score" for the curves
QUADRATURE_TOLERANCE = 1e-3


def by_seed(results):
    """(data set, model) -> {seed: (score, seconds, info)} of the runs that ended."""
    runs = defaultdict(dict)
    for data, model, seed, score, seconds, info in results:
        if _ended(score):
            runs[data, model][seed] = score, seconds, info
    return runs


def _ended(score):
    return score is not None and math.isfinite(score)


def mean_of(runs, data, model, field=0):
    values = [r[field] for r in runs.get((data, model), {}).values()]
    return float(np.mean(values)) if values else None


def failures(results):
    """Lines naming the runs that failed, and why."""
    return [
        f"- {data}, {model}, seed {seed}: {info.get('error', f'score {score}')}"
        for data, model, seed, score, _, info in results
        if not _ended(score)
    ]


def fmt(value, sign=False):
    return "–" if value is None else f"{value:+.2f}" if sign else f"{value:.2f}"


def cell(runs, data, model):
    """Mean ± sample standard deviation over seeds; * where a run hit a time cap."""
    ended = runs.get((data, model), {}).values()
    scores = [r[0] for r in ended]
    if not scores:
        return "–"
    capped = "*" if any(r[2].get("stopped") == "cap" for r in ended) else ""
    if len(scores) == 1:  # no spread to show
        return f"{scores[0]:.2f}{capped}"
    return f"{np.mean(scores):.2f} ± {np.std(scores, ddof=1):.2f}{capped}"


def best_classical(runs, data):
    """(name, mean) of the best classical peer on ``data``, or (None, None)."""
    means = {m: mean_of(runs, data, m) for m in peers.CLASSICAL}
    means = {m: v for m, v in means.items() if v is not None}
    if not means:
        return None, None
    best = max(means, key=means.get)
    return best, means[best]


def describe(data, dequantize="sparse"):
    X, notes = prepared(data, dequantize)
    return f"{data} ({len(X)}x{X.shape[1]}, {notes['dequantized']})"


def results_table(names, models, runs, dequantize="sparse"):
    """One row per data set: each model, the best classical peer, margins."""
    with_flow = peers.FLOW in models
    head = ["data set (n x D, dequantized)", *models]
    head += ["best classical", "VAE margin", *(["VAE − flow"] if with_flow else [])]
    rows = []
    for d in names:
        best, best_mean = best_classical(runs, d)
        vae, flow = mean_of(runs, d, DEFAULT), mean_of(runs, d, peers.FLOW)
        cells = [cell(runs, d, m) for m in models]
        if prepared(d)[0].shape[1] > peers.FLOW_MAX_FEATURES and peers.FLOW in models:
            cells[models.index(peers.FLOW)] = "skipped"
        margin = None if None in (vae, best_mean) else vae - best_mean
        versus_flow = None if None in (vae, flow) else vae - flow
        rows.append([describe(d, dequantize), *cells, best or "–", fmt(margin, True)])
        if with_flow:
            rows[-1].append(fmt(versus_flow, True))
    return harness.table(head, rows, "l" + "r" * (len(head) - 1))


def summary_table(names, models, runs):
    """Per VAE model: wins over the best classical peer, margins, against the flow."""
    rows = []
    for v in [m for m in models if m.startswith("GaussianVAE")]:
        margins, versus_flow, large = [], [], 0
        for d in names:
            vae, (_, best) = mean_of(runs, d, v), best_classical(runs, d)
            flow = mean_of(runs, d, peers.FLOW)
            if vae is not None and best is not None:
                margins.append(vae - best)
            if vae is not None and flow is not None:
                versus_flow.append(vae - flow)
                large += vae >= flow and len(prepared(d)[0]) >= LARGE
        wins = sum(m > 0 for m in margins)
        above = sum(m >= 0 for m in versus_flow)
        rows.append(
            [
                v,
                f"{wins} of {len(margins)}",
                fmt(np.mean(margins) if margins else None, True),
                fmt(statistics.median(margins) if margins else None, True),
            ]
        )
        if peers.FLOW in models:
            rows[-1].append(
                f"{above} of {len(versus_flow)} ({large} of them {LARGE}+ rows)"
            )
    head = ["model", "beats best classical", "mean margin", "median margin"]
    if peers.FLOW not in models:
        return harness.table(head, rows, "lrrr")
    return harness.table([*head, "at or above the flow"], rows, "lrrrr")


def seconds_table(names, models, runs):
    """Median over data sets of each model's mean fit seconds."""
    medians = {}
    for m in models:
        values = [mean_of(runs, d, m, field=1) for d in names]
        values = [v for v in values if v is not None]
        medians[m] = statistics.median(values) if values else None
    rows = [[m, "–" if s is None else f"{s:.1f}"] for m, s in medians.items()]
    lines = harness.table(["model", "median fit seconds"], rows, "lr")
    if medians.get(DEFAULT) and medians.get(MAIN):
        ratio = medians[DEFAULT] / medians[MAIN]
        lines += ["", f"{DEFAULT} / {MAIN}, median fit seconds: {ratio:.2f}x."]
    return lines


def time_to_quality(points, final):
    """(seconds, epochs) of the first chunk within WITHIN of ``final``, or None."""
    for epochs, seconds, score in points:
        if score >= final - WITHIN:
            return seconds, epochs
    return None


def curves_table(names, runs):
    """Per data set: seconds and epochs the chunked default needs to come close."""
    rows = []
    for d in names:
        reached, missed = [], 0
        for seed, (last, _, info) in runs.get((d, CURVE), {}).items():
            final = runs.get((d, DEFAULT), {}).get(seed, (last,))[0]
            hit = time_to_quality(info["points"], final)
            if hit is None:
                missed += 1
            else:
                reached.append(hit)
        if not reached and not missed:
            continue
        seconds = [r[0] for r in reached]
        epochs = [r[1] for r in reached]
        rows.append(
            [
                d,
                fmt(mean_of(runs, d, DEFAULT, field=1)),
                fmt(statistics.median(seconds) if seconds else None),
                "–" if not epochs else f"{statistics.median(epochs):.0f}",
                missed,
            ]
        )
    head = ["data set", "default fit s", f"s to within {WITHIN}", "epochs", "missed"]
    return harness.table(head, rows, "lrrrr")


def real_report(names, models, results, args):
    runs = by_seed(results)
    shown = [m for m in models if m != CURVE]
    dropped = [f"{d} ({prepared(d)[1]['dropped']})" for d in names]
    dropped = [text for text in dropped if not text.endswith("(0)")]
    lines = [
        "Held-out log-likelihood per row (nats, in each data set's dequantized "
        f"units; mean ± sample sd over {args.seeds} seeds of a 75/25 split, "
        f"{min(FEW_SEEDS.values())} for {', '.join(FEW_SEEDS)}; at most "
        f"{MAX_TRAIN} training and {MAX_TEST} test rows). Best classical: the "
        f"best of {', '.join(peers.CLASSICAL)}; VAE margin: {DEFAULT} minus it. "
        f"The flow is skipped on data wider than {peers.FLOW_MAX_FEATURES} columns; "
        "* marks a cell where a fit stopped at its cap (of time or epochs). "
        f"Constant columns dropped: {', '.join(dropped) or 'none'}. "
        + (
            "Dequantized: every column with fewer distinct values than half "
            "the rows, by its smallest gap."
            if args.dequantize == "sparse"
            else "Dequantized: every column with a repeated value, each value "
            "over its gap to the next, or its share of the rows times the "
            "column's sd where that is wider."
        )
        + (f" Seeds {args.first_seed} on." if args.first_seed else ""),
        "",
        *results_table(names, shown, runs, args.dequantize),
        "",
        *summary_table(names, shown, runs),
        "",
        *seconds_table(names, shown, runs),
    ]
    if CURVE in models:
        lines += [
            "",
            f"Time to quality: {DEFAULT} trained in chunks of {args.chunk} epochs "
            "with `warm_start=True`; fit seconds (median over seeds) until the "
            f"held-out score is within {WITHIN} nats/row of the default fit's.",
            "",
            *curves_table(names, runs),
        ]
    return lines


def synthetic_report(name, models, results, args):
    runs = by_seed(results)
    _, X_test, params = synthetic_data(args.latent, *args.synthetic_rows)
    truths = [
        float(np.mean(synthetic.true_log_density(X_test, params, g)))
        for g in args.grids
    ]
    gap = abs(truths[1] - truths[0])
    truth = truths[-1]
    rows = [
        [m, cell(runs, name, m), fmt(mean_of(runs, name, m) - truth, True)]
        + [fmt(mean_of(runs, name, m, field=1))]
        for m in models
        if mean_of(runs, name, m) is not None
    ]
    best, best_mean = best_classical(runs, name)
    vae = mean_of(runs, name, DEFAULT)
    n_train, n_test = args.synthetic_rows
    return [
        f"Synthetic data of known density: {args.latent} latent variables, "
        f"{X_test.shape[1]} features, g(z) = A tanh(Bz + c) + Cz, noise sigma "
        f"{params['noise']}, feature scales {params['scale'].min():.2g} to "
        f"{params['scale'].max():.2g}; {n_train} training and {n_test} test rows; "
        f"mean ± sample sd over {args.seeds} model seeds.",
        "",
        f"True held-out log-likelihood per row by quadrature: {truths[0]:.5f} "
        f"({args.grids[0]}^{args.latent} grid), {truths[1]:.5f} "
        f"({args.grids[1]}^{args.latent} grid): they differ by {gap:.1e}, "
        f"{'within' if gap <= QUADRATURE_TOLERANCE else 'NOT within'} "
        f"{QUADRATURE_TOLERANCE:g} nats/row.",
        "",
        *harness.table(
            ["model", "held-out", "gap to truth", "fit seconds"], rows, "lrrr"
        ),
        "",
        f"Best classical peer: {best or '–'}; {DEFAULT} minus it: "
        f"{fmt(None if None in (vae, best_mean) else vae - best_mean, True)}.",
    ]
