"""Resumable runs over the anomaly data sets, shared by the study scripts.

``benchmarks/anomaly_scores.py`` and ``benchmarks/anomaly_support.py`` each
run one function per (data set, setting, seed) and keep every result in a
JSON-lines file, so that an interrupted study resumes where it stopped.
"""

import json
import os
from pathlib import Path

from joblib import Parallel, delayed

DATA_DIR = Path(
    os.environ.get(
        "SKVAE_DATA_DIR",
        Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "anomaly",
    )
)


def data_names():
    """The names of the data sets in DATA_DIR, sorted."""
    return sorted(p.stem for p in DATA_DIR.glob("*.npz"))


def resumable_runs(run_one, settings, names, seeds, runs, n_jobs):
    """Every result recorded in ``runs`` plus those of the runs missing there.

    ``run_one(data_name, setting, seed)`` returns a JSON-serialisable sequence
    that starts with those three values; a (data set, setting, seed) already
    in the file is not run again. Each new result is appended to the file as
    soon as it ends.
    """
    done = []
    if runs.exists():
        done = [json.loads(line) for line in runs.read_text().splitlines()]
    seen = {tuple(r[:3]) for r in done}
    jobs = [
        (d, s, seed)
        for seed in range(seeds)
        for s in settings
        for d in names
        if (d, s, seed) not in seen
    ]
    results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
        delayed(run_one)(*job) for job in jobs
    )
    with runs.open("a") as file:
        for result in results:
            file.write(json.dumps(result) + "\n")
            file.flush()
            done.append(result)
    return done
