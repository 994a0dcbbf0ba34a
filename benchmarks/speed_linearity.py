"""Section ``linearity`` of speed.py: score_samples time against rows and draws.

python benchmarks/speed.py --sections linearity [--d 20] [--repeats 3]
    [--device cpu] [--write-docs]
"""

import statistics
from functools import partial

from _common import table_head, table_row
from _speed import fit_quietly, synthetic, timed, vae


def run(args, log):
    """score_samples time against rows and against importance draws."""
    n, d = 10_000, min(args.d)
    X = synthetic(4 * n, d)
    model = fit_quietly(vae("auto", 5, args.device), X[:n])
    lines = [
        "### score_samples linearity",
        "",
        f"Model fitted on {n:,} rows, D={d}; median seconds of {args.repeats} "
        "calls and microseconds per row and draw (constant when linear).",
        "",
        *table_head(
            ["rows", "n_importance_samples", "seconds", "us per row x draw"], "rrrr"
        ),
    ]
    cases = [(r, 64) for r in (2_500, 5_000, 10_000, 20_000)]
    cases += [(5_000, k) for k in (16, 128, 256)]
    for rows, draws in cases:
        model.set_params(n_importance_samples=draws)
        seconds = statistics.median(
            timed(partial(model.score_samples, X[:rows])) for _ in range(args.repeats)
        )
        line = table_row(
            [
                f"{rows:,}",
                draws,
                f"{seconds:.3f}",
                f"{1e6 * seconds / (rows * draws):.3f}",
            ]
        )
        log(line)
        lines.append(line)
    return lines
