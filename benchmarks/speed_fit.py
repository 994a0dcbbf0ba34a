"""Section ``fit`` of speed.py: fit, score_samples and transform throughput.

Fit throughput of GaussianVAE against the hand-written loop (``_raw_loop.py``)
and PyOD's VAE (when pyod is installed and ``--no-pyod`` is not given), with
setup excluded by differencing two fits; then score_samples and transform
throughput of a one-epoch model.

    python benchmarks/speed.py --sections fit [--n 1e4 1e5 1e6] [--d 20 100]
        [--repeats 3] [--warmup-epochs 1] [--min-rows 200000] [--budget 240]
        [--no-pyod] [--device cpu] [--write-docs]
"""

import math
import statistics
from functools import partial

from _common import pyod_version, table_head, table_row
from _raw_loop import fit_raw
from _speed import auto_fit, fit_pyod, fit_vae_epochs, rows_per_s, synthetic, timed

SCORE_ROWS = 20_000
TRANSFORM_ROWS = 200_000


def estimate(rates, what, n, d):
    """Seconds per row at (n, d), from the largest smaller size measured."""
    known = [(k[1], v) for k, v in rates.items() if k[0] == what and k[2] == d]
    known = [(m, v) for m, v in known if m < n]
    if not known:
        return 0.0
    return 1.0 / max(known)[1]


def median_rate(rows, fn, repeats):
    """Rows per second of ``fn``, median of ``repeats`` calls."""
    return rows_per_s(rows, statistics.median(timed(fn) for _ in range(repeats)))


def run(args, log):
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
        *table_head(
            [
                "n",
                "D",
                "batch",
                "repeats",
                "fit (GaussianVAE)",
                "fit (raw loop)",
                "VAE / raw",
                "fit (PyOD VAE)",
                "VAE / PyOD",
                "score_samples",
                "transform",
            ],
            "r" * 11,
        ),
    ]
    pyod = pyod_version() is not None and not args.no_pyod
    rates = {}
    skipped = []
    for n in args.n:
        for d in args.d:
            # Enough timed epochs that small data sets are not all noise.
            e2 = e1 + max(2, math.ceil(args.min_rows / n))
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
            X = synthetic(n, d)
            # Also pays the first-call costs before anything is timed.
            model = auto_fit(X, args.device)
            batch = model.batch_size_
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
            score_X, transform_X = X[:SCORE_ROWS], X[:TRANSFORM_ROWS]
            score_rate = median_rate(
                len(score_X), partial(model.score_samples, score_X), repeats
            )
            transform_rate = median_rate(
                len(transform_X), partial(model.transform, transform_X), repeats
            )
            line = table_row(
                [
                    f"{n:,}",
                    d,
                    batch,
                    repeats,
                    f"{vae_rate:,.0f}",
                    f"{raw_rate:,.0f}",
                    f"{statistics.median(ratios):.2f}",
                    *pyod_cells,
                    f"{score_rate:,.0f}",
                    f"{transform_rate:,.0f}",
                ]
            )
            log(line)
            lines.append(line)
    if skipped:
        lines += [
            "",
            "Skipped (would not finish within the budget): " + "; ".join(skipped) + ".",
        ]
    return lines
