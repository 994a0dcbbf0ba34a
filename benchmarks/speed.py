"""Training and scoring speed, memory and scale of GaussianVAE.

Measures, in one run and side by side, for n rows x D features:

- ``fit``: fit throughput (training rows per second, setup excluded) of
  ``GaussianVAE`` against a minimal raw PyTorch loop of the same network
  (``_raw_loop.py``), and against PyOD's VAE when pyod is installed
  (``pip install .[benchmark]``); ``score_samples`` and ``transform``
  throughput (``speed_fit.py``);
- ``parity``: the same comparison epoch by epoch in one process, so that load
  from elsewhere hits both alike (``speed_parity.py``);
- ``memory``: peak resident memory of ``fit``, each in a fresh subprocess
  (``speed_memory.py``);
- ``linearity``: ``score_samples`` time in rows and in ``n_importance_samples``
  (``speed_linearity.py``);
- ``quality``: time to quality for ``batch_size="auto"`` against fixed batch
  sizes (``speed_quality.py``);
- ``search``: ``GridSearchCV`` wall time with ``n_jobs=1`` and ``n_jobs=2``
  (``speed_search.py``);
- ``threads``: a default fit on real data with the threads a user has
  against one thread (``speed_threads.py``).

Setup is excluded from the fit throughput by differencing: a fit of
``E + k`` epochs minus a fit of ``E`` epochs (same data, seed and settings)
leaves the time of ``k`` epochs, with validation, standardization, the
final variance pass and first-call warm-up cancelled out (``k`` grows at small
n so that enough rows are timed). The raw loop and
PyOD's VAE are timed the same way. The runs of the competitors are
interleaved within each repeat, so that load from other processes hits them
alike; the ratios are the robust figures, the absolute rates depend on the
machine. With ``--write-docs``, each table measured replaces the one of the
same title in docs/benchmarks.md between the ``<!-- BEGIN speed -->`` and
``<!-- END speed -->`` markers; the others stay, each with its command.

    python benchmarks/speed.py [--sections fit parity memory linearity quality search threads]
        [--n 1e4 1e5 1e6] [--d 20 100] [--repeats 3] [--device cpu]
        [--warmup-epochs 1] [--min-rows 200000] [--budget 240] [--no-pyod]
        [--quality-n 20000] [--quality-budget 40] [--quality-seeds 3]
        [--n-jobs 1] [--threads-data NAME ...] [--write-docs]

Each section's module gives its own command.
"""

import re

import _common as harness
import speed_fit
import speed_linearity
import speed_memory
import speed_parity
import speed_quality
import speed_search
import speed_threads

SECTIONS = {
    "fit": speed_fit.run,
    "parity": speed_parity.run,
    "memory": speed_memory.run,
    "linearity": speed_linearity.run,
    "quality": speed_quality.run,
    "search": speed_search.run,
    "threads": speed_threads.run,
}


def merged(header, tables):
    """The speed section with the tables just measured replacing theirs (by title).

    Tables from earlier runs of other sections are kept, each with the
    command that produced it; the versions and machine are this run's.
    """
    blocks = {}
    for block in re.split(r"\n(?=### )", harness.read_docs("speed")):
        if block.startswith("### "):
            blocks[block.splitlines()[0]] = block.strip("\n")
    for table in tables:
        blocks[table[0]] = "\n".join(table).strip("\n")
    return [*header, "\n\n".join(blocks.values())]


def main(argv=None):
    parser = harness.argument_parser(__doc__, docs_section="speed")
    parser.add_argument(
        "--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS
    )
    parser.add_argument("--n", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--d", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
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
    parser.add_argument(
        "--threads-data",
        nargs="+",
        default=speed_threads.DATA,
        help="data sets of the threads section (benchmarks/likelihood.py's names)",
    )
    args = parser.parse_args(argv)
    args.n = [int(n) for n in args.n]

    command = harness.command(argv)
    header = harness.header(args.device)
    for line in [command, "", *header]:
        harness.log(line)
    tables = []
    for name in args.sections:
        table = SECTIONS[name](args, harness.log)
        tables.append([table[0], "", command, *table[1:]])
    if args.write_docs:
        harness.write_docs("speed", "\n".join(merged(header, tables)))


if __name__ == "__main__":
    main()
