"""Section ``memory`` of speed.py: peak resident memory of one epoch of fit.

As a user's default fit runs: the closed-form start and the competing
randomly started network (``init="auto"`` with early stopping), the
held-out rows scored to compare them.

Each fit runs in a fresh process (this file run as a script, which is how
speed.py starts it), so that earlier sections leave no trace in the peak.

    python benchmarks/speed.py --sections memory [--n 1e4 1e5 1e6] [--d 20 100]
        [--repeats 3] [--device cpu] [--write-docs]

A process's peak is not the same from one run to the next: where the
allocator (glibc's malloc) fragments its heap, a peak can move by hundreds
of MB. Each fit is therefore repeated in ``--repeats`` fresh processes, and
the table gives the median and the largest peak.
"""

import json
import resource
import statistics
import sys

from _common import child_result, table_head, table_row
from _raw_loop import RawVAE, fit_raw
from _speed import auto_fit, synthetic


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


def child(n, d, device, batch):
    """Peak RSS of one fit over the baseline after imports and data, in bytes.

    GaussianVAE with ``batch_size="auto"`` when ``batch`` is None, else the
    raw loop with that batch size.
    """
    X = synthetic(n, d)
    # The baseline is the process after imports and X, as a user's would be.
    baseline = peak_rss()
    if batch is None:
        # The default's start and competing network, as a user's fit has.
        model = auto_fit(X, device, init="auto", early_stopping="auto")
        batch = model.batch_size_
        n_params = sum(p.numel() for p in model.module_.parameters())
    else:
        fit_raw(X, batch, 0, 1, device)
        n_params = sum(p.numel() for p in RawVAE(d).parameters())
    peak = peak_rss()
    return {
        "extra": peak - baseline,
        "X": X.nbytes,
        "model": 4 * n_params,
        "batch": batch,
    }


def in_child(n, d, device, batch=None):
    """:func:`child` in a fresh Python process."""
    return child_result([sys.executable, __file__, json.dumps([n, d, device, batch])])


def run(args, log):
    lines = [
        "### Peak memory of fit",
        "",
        "Peak resident memory (`VmHWM`, else `ru_maxrss`) of one epoch of `fit` in a fresh "
        "process, the default's closed-form start and its competing randomly "
        'started network included (`init="auto"`, `early_stopping="auto"`), '
        "minus the process's peak after imports and after building X "
        f"(float32), in MB, the median and the largest of {args.repeats} processes; "
        "the target is at most about 2x (float32 X + model), for the median. "
        "The raw loop's standardized copy of X is shown for reference (median).",
        "",
        *table_head(
            [
                "n",
                "D",
                "float32 X + model",
                "fit (GaussianVAE)",
                "largest",
                "ratio",
                "fit (raw loop)",
            ],
            "r" * 7,
        ),
    ]
    for n in args.n:
        for d in args.d:
            vae = [in_child(n, d, args.device) for _ in range(args.repeats)]
            batch = vae[0]["batch"]
            raw = [in_child(n, d, args.device, batch) for _ in range(args.repeats)]
            base = vae[0]["X"] + vae[0]["model"]
            extra = statistics.median(v["extra"] for v in vae)
            line = table_row(
                [
                    f"{n:,}",
                    d,
                    f"{base / 1e6:,.1f}",
                    f"{extra / 1e6:,.1f}",
                    f"{max(v['extra'] for v in vae) / 1e6:,.1f}",
                    f"{extra / base:.2f}",
                    f"{statistics.median(r['extra'] for r in raw) / 1e6:,.1f}",
                ]
            )
            log(line)
            lines.append(line)
    return lines


if __name__ == "__main__":
    print(json.dumps(child(*json.loads(sys.argv[1]))))
