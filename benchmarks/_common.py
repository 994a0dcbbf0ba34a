"""The benchmark harness: data, headers, tables, the docs writer and resumable runs.

Every script in this folder builds on it, so that they all

- read the shared data sets from one place (``../shared/data/anomaly``
  beside the repository, or ``$SKVAE_DATA_DIR``);
- print one header: the command, the versions and the machine;
- format markdown tables alike;
- write docs/benchmarks.md only between their ``<!-- BEGIN name -->`` and
  ``<!-- END name -->`` markers, and only with ``--write-docs``, so that a
  trial run never overwrites measured figures;
- keep each finished run in a JSON-lines file (``--runs FILE``), so that an
  interrupted benchmark resumes where it stopped, with the settings it ran
  with, so that a resumed benchmark never mixes runs of other settings;
- restore any global torch setting they change (:func:`torch_threads`,
  :func:`seeded_torch`).

Not a script: the scripts import it as ``_common`` (Python puts the script's
folder on ``sys.path``).
"""

import argparse
import functools
import json
import os
import platform
import shlex
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import sklearn
import torch
from joblib import Parallel, delayed
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

import skvae

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
DATA_DIR = Path(
    os.environ.get("SKVAE_DATA_DIR", ROOT.parent / "shared" / "data" / "anomaly")
)


# ------------------------------------------------------------------ data

# The data sets that ship with scikit-learn, by the names the benchmarks
# report them under (ADBench's wine is "wine"); each loader takes
# return_X_y=True. Diabetes in its raw units, not scaled.
SKLEARN = {
    "breast_cancer": load_breast_cancer,
    "diabetes": functools.partial(load_diabetes, scaled=False),
    "wine_sklearn": load_wine,
}


def data_names(selected=None):
    """The names of the data sets in DATA_DIR, sorted, or the ``selected`` ones.

    Exits if there are none, or if one selected is not there.
    """
    names = sorted(p.stem for p in DATA_DIR.glob("*.npz"))
    if not names:
        sys.exit(f"No .npz data sets in {DATA_DIR}; set SKVAE_DATA_DIR.")
    missing = set(selected or ()) - set(names)
    if missing:
        sys.exit(f"Not in {DATA_DIR}: {', '.join(sorted(missing))}.")
    return sorted(selected) if selected else names


def load(name):
    """(X, y) of the data set ``name`` in DATA_DIR; y marks the anomalies."""
    data = np.load(DATA_DIR / f"{name}.npz")
    return data["X"], data["y"]


_CALLED = set()


def once(key, fn):
    """Call ``fn()`` the first time ``key`` comes in this process only.

    For warm-ups in parallel workers: a cache on a function of a script
    (``__main__``) cannot be unpickled there; this module is imported there.
    """
    if key not in _CALLED:
        fn()
        _CALLED.add(key)


# ------------------------------------------------------ command and header


def argument_parser(doc, docs_section=None, runs=None, data=False, seeds=None):
    """The parser of a script whose module docstring is ``doc``.

    With ``docs_section``, ``--write-docs`` replaces that section of
    docs/benchmarks.md. With ``runs`` (a default file name, or ``""`` for
    none), ``--runs FILE`` keeps the finished runs and ``--n-jobs`` runs them
    in parallel. With ``data``, ``--data NAME ...`` picks data sets of
    DATA_DIR (all by default). With ``seeds``, ``--seeds`` (that many by
    default) sets the number of seeds.
    """
    parser = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        epilog=doc.split("\n\n", 1)[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if docs_section:
        parser.add_argument(
            "--write-docs",
            action="store_true",
            help=f"replace the {docs_section!r} section of docs/benchmarks.md",
        )
    if runs is not None:
        parser.add_argument(
            "--runs",
            type=Path,
            default=Path(runs) if runs else None,
            help="JSON-lines file of finished runs; those in it are not run again",
        )
        parser.add_argument("--n-jobs", type=int, default=1, help="parallel runs")
    if seeds is not None:
        parser.add_argument("--seeds", type=int, default=seeds)
    if data:
        parser.add_argument(
            "--data", nargs="+", metavar="NAME", help="data sets (default: all)"
        )
    return parser


def command(argv=None):
    """The command line that reproduces this run, as a markdown line."""
    argv = sys.argv[1:] if argv is None else argv
    script = f"benchmarks/{Path(sys.argv[0]).name}"
    return f"Command: `{shlex.join(['python', script, *map(str, argv)])}`"


def pyod_version():
    """pyod's version, or None where it is not installed."""
    try:
        import pyod
    except ImportError:
        return None
    return pyod.__version__


def header(device="cpu"):
    """Lines giving the versions and the machine, each followed by a blank line."""
    device = torch.device(device)
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    return [
        f"Versions: skvae {skvae.__version__}, torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, "
        f"pyod {pyod_version() or 'not installed'}, "
        f"Python {platform.python_version()}.",
        "",
        f"Machine: {platform.system()} {platform.release()}, {machine}, device "
        f"{device}, torch threads {torch.get_num_threads()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}.",
        "",
    ]


def log(line=""):
    """Print one line at once (long runs report as they go)."""
    print(line, flush=True)


# ---------------------------------------------------------------- tables


def table_row(cells):
    """One markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table_head(columns, align=None):
    """The header and rule of a markdown table.

    ``align`` has one letter per column, ``l`` or ``r``; all left by default.
    """
    align = align or "l" * len(columns)
    rule = "".join("|---:" if a == "r" else "|---" for a in align) + "|"
    return [table_row(columns), rule]


def table(columns, rows, align=None):
    """A markdown table, as lines."""
    return table_head(columns, align) + [table_row(r) for r in rows]


def mean_sd(values):
    """``mean ± sd`` to three decimals, or a dash for no values."""
    if not len(values):
        return "–"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


# ----------------------------------------------------------- docs writer


def _markers(section):
    return f"<!-- BEGIN {section} -->\n", f"\n<!-- END {section} -->"


def read_docs(section):
    """The text between the markers of ``section`` in docs/benchmarks.md."""
    begin, end = _markers(section)
    return DOCS.read_text().split(begin, 1)[1].split(end, 1)[0]


def write_docs(section, text):
    """Replace the text between the markers of ``section`` in docs/benchmarks.md."""
    begin, end = _markers(section)
    head, rest = DOCS.read_text().split(begin, 1)
    tail = rest.split(end, 1)[1]
    DOCS.write_text(head + begin + text.strip("\n") + end + tail)


def publish(lines, section=None, write=False):
    """Print the lines; with ``write``, also put them into ``section`` of the docs."""
    text = "\n".join(lines)
    log(text)
    if write:
        write_docs(section, text)
        log(f"\nWritten to {DOCS.relative_to(ROOT)} ({section}).")


# ------------------------------------------------------- resumable runs


def read_runs(runs):
    """The records of the runs file ``runs``, as (result, fingerprint) pairs.

    A record is the result alone where its script keeps no fingerprint, or
    where it was written before fingerprints were kept: its fingerprint is
    then None.
    """
    records = []
    for line in runs.read_text().splitlines():
        record = json.loads(line)
        if isinstance(record, dict):
            records.append((record["result"], record["fingerprint"]))
        else:
            records.append((record, None))
    return records


def _difference(recorded, requested):
    """The entries in which two fingerprints differ, as text."""
    keys = sorted(recorded.keys() | requested.keys())
    return "; ".join(
        f"{k}: {json.dumps(recorded.get(k))} recorded, "
        f"{json.dumps(requested.get(k))} asked for"
        for k in keys
        if recorded.get(k) != requested.get(k)
    )


def _recorded(runs, jobs, fingerprint):
    """The results of ``jobs`` in ``runs``, and the jobs not there.

    Stops the script if a job's recorded fingerprint differs from
    ``fingerprint(*job)``; see :func:`resumable_runs`.
    """
    wanted = set(jobs)
    done, differing, unchecked = [], [], False
    if runs is None or not runs.exists():
        return done, wanted
    for result, recorded in read_runs(runs):
        key = tuple(result[: len(jobs[0])]) if jobs else None
        if key not in wanted:
            continue
        wanted.discard(key)  # a job recorded twice counts once
        if fingerprint is not None:
            requested = json.loads(json.dumps(fingerprint(*key)))
            if recorded is None:
                unchecked = True
            elif recorded != requested:
                differing.append(f"{key}: {_difference(recorded, requested)}")
        done.append(result)
    if differing:
        sys.exit(
            f"{runs} holds {len(differing)} of the runs asked for with other "
            f"settings, e.g. {differing[0]}; record these settings in another "
            "--runs file."
        )
    if unchecked:
        message = (
            f"{runs} holds runs recorded without their settings (before they were "
            "kept); they are used as they are, unchecked."
        )
        once(("unchecked", runs), lambda: warnings.warn(message, stacklevel=5))
    return done, wanted


def resumable_runs(run_one, jobs, runs=None, n_jobs=1, run=True, fingerprint=None):
    """The results of ``run_one(*job)`` for each job, reusing those in ``runs``.

    ``run_one`` returns a JSON-serialisable list that starts with the job's
    own values. With a ``runs`` file, each new result is appended to it as
    soon as it ends, and a job already there is not run again; with
    ``run=False`` nothing runs (the recorded results are only read back), and
    the script stops if the file is missing or holds none of the jobs.
    Results come in the order they finish.

    ``fingerprint(*job)``, where given, is a dict of what determines the job's
    result beyond the job itself (parameters, the script's arguments that
    matter): it is recorded with the result, and the script stops if a job's
    recorded fingerprint differs from the one asked for. Results recorded
    without one (written before fingerprints were kept) are taken unchecked,
    with a warning.
    """
    jobs = [tuple(job) for job in jobs]
    if not run and (runs is None or not runs.exists()):
        where = "no --runs FILE given" if runs is None else f"no runs file {runs}"
        sys.exit(f"No runs to tabulate: {where}.")
    done, wanted = _recorded(runs, jobs, fingerprint)
    if not run and jobs and not done:
        sys.exit(
            f"No runs to tabulate: {runs} holds none of the {len(jobs)} runs asked for."
        )
    if not run and wanted:
        warnings.warn(
            f"{runs} lacks {len(wanted)} of the {len(jobs)} runs asked for; "
            "tabulating the others.",
            stacklevel=2,
        )
    todo = [job for job in jobs if job in wanted] if run else []
    results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
        delayed(run_one)(*job) for job in todo
    )
    file = runs.open("a") if runs is not None and todo else None
    try:
        for result in results:
            result = json.loads(json.dumps(result))  # as it will read back
            if file:
                record = result
                if fingerprint is not None:
                    job = tuple(result[: len(jobs[0])])
                    record = {"result": result, "fingerprint": fingerprint(*job)}
                file.write(json.dumps(record) + "\n")
                file.flush()
            done.append(result)
    finally:
        if file:
            file.close()
    return done


def run_study(run_one, settings, args, run=True):
    """The data sets and the results of ``run_one(data set, setting, seed)``.

    Over the data sets (``args.data``), the settings and the seeds
    (``args.seeds``), resumed from ``args.runs``; see :func:`resumable_runs`.
    Each run's fingerprint is its setting's value in ``settings``.
    """
    names = data_names(args.data)
    jobs = [(d, s, seed) for seed in range(args.seeds) for s in settings for d in names]
    return names, resumable_runs(
        run_one,
        jobs,
        args.runs,
        args.n_jobs,
        run,
        fingerprint=lambda d, s, seed: {"setting": settings[s]},
    )


# -------------------------------------------------------- global settings


def child_result(command, env=None, cwd=None):
    """Run ``command`` in a fresh process; the JSON its last line of output prints.

    Raises RuntimeError with the last line of the child's error output (its
    exception) if it fails.
    """
    child = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    if child.returncode:
        raise RuntimeError(child.stderr.strip().splitlines()[-1])
    return json.loads(child.stdout.strip().splitlines()[-1])


@contextmanager
def torch_threads(n):
    """Run the block with ``n`` torch threads, then restore the number before."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def seeded_torch(seed, device="cpu"):
    """Seed torch's global generators for the block, then restore their state.

    For hand-written torch code (the reference training loop), which draws
    from the global generators as a PyTorch user's would.
    """
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
