"""Leave-one-data-set-out choice among the VAE settings that anomaly.py recorded.

Choosing a default on the data sets it is then scored on flatters it. Here,
for each data set, the VAEOutlierDetector setting with the best mean ROC AUC
(and, separately, the best mean average precision) over the other data sets is
chosen and scored on the one left out. Variants of one data set (annthyroid
and thyroid, landsat and satellite, cardiotocography and cardio: the same
records) leave together, so that a setting is never chosen on a copy of the
data it is scored on. The left-out mean is then compared with the in-sample
mean, that of the setting best over all the data sets.

    python benchmarks/anomaly_loo.py --runs FILE [--data NAME ...]
        [--settings PATTERN ...] [--write-docs]

FILE is the runs file of ``benchmarks/anomaly.py``; the settings are the
VAEOutlierDetector ones recorded in it (the default, "one fit" and those added
with ``--vae``), each with the mean over its recorded seeds; ``--settings``
keeps those whose names match one of the shell-style patterns (e.g. ``'t*'``).
A setting without runs on every data set is left out of the choice, and said
so.
"""

import fnmatch
import json

import _common as harness
import numpy as np
from anomaly import collect, data_means

# Data sets holding the same records (see the data README): they leave together.
VARIANTS = (
    ("annthyroid", "thyroid"),
    ("cardio", "cardiotocography"),
    ("landsat", "satellite"),
)
METRICS = {"auc": "ROC AUC", "ap": "average precision"}


def left_out_with(data_name):
    """The data sets left out when ``data_name`` is: it and its variants."""
    for group in VARIANTS:
        if data_name in group:
            return set(group)
    return {data_name}


def best(means, settings, datasets):
    """The setting with the highest mean over ``datasets``."""
    return max(settings, key=lambda s: np.mean([means[s][d] for d in datasets]))


def choose(means, settings, datasets):
    """Per data set, the setting chosen on the others, and the in-sample best."""
    chosen = {
        d: best(means, settings, [o for o in datasets if o not in left_out_with(d)])
        for d in datasets
    }
    return chosen, best(means, settings, datasets)


def recorded(runs_file, selected):
    """The VAE settings, their runs and the data sets, from the runs file."""
    records = [json.loads(line) for line in runs_file.read_text().splitlines()]
    # Runs of anomaly.py with their parameters; not its clean-Gaussian checks.
    records = [r for r in records if len(r) > 7 and r[7].get("params") is not None]
    results = collect(records)
    datasets = sorted(selected or {d for d, _ in results})
    names = sorted({n for _, n in results})
    complete = [n for n in names if all(results.get((d, n)) for d in datasets)]
    return results, complete, sorted(set(names) - set(complete)), datasets


def main(argv=None):
    parser = harness.argument_parser(
        __doc__, docs_section="anomaly_loo", runs="", data=True
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        metavar="PATTERN",
        help="choose only among the settings whose names match (default: all)",
    )
    args = parser.parse_args(argv)
    if args.runs is None or not args.runs.exists():
        parser.error("--runs FILE (a runs file of benchmarks/anomaly.py) is required")
    results, settings, incomplete, datasets = recorded(args.runs, args.data)
    if args.settings:
        settings = [
            s for s in settings if any(fnmatch.fnmatch(s, p) for p in args.settings)
        ]
    if not settings:
        parser.error("no VAE setting has runs on all the data sets")
    means = {
        metric: {s: data_means(results, s, metric, datasets) for s in settings}
        for metric in METRICS
    }
    lines = [harness.command(argv), "", *harness.header()]
    mean_rows = [
        [s, *(f"{np.mean(list(means[m][s].values())):.3f}" for m in METRICS)]
        for s in settings
    ]
    lines += [
        f"Mean over the {len(datasets)} data sets of the means over seeds:",
        "",
        *harness.table(["setting", "ROC AUC", "AP"], mean_rows, "lrr"),
        "",
        f"Settings ({len(settings)}): "
        + "; ".join(
            f"{s} {json.dumps(next(iter(results[datasets[0], s].values()))['params'])}"
            for s in settings
        )
        + "."
        + (
            f" Left out, not run on every data set: {', '.join(incomplete)}."
            if incomplete
            else ""
        ),
        "",
        "Leaving one data set out (with its variants: "
        + ", ".join(" and ".join(g) for g in VARIANTS)
        + " leave together), the setting best on the rest, and its score on the "
        "one left out:",
        "",
    ]
    chosen = {}
    rows = {
        d: [d, ", ".join(sorted(left_out_with(d) & set(datasets)))] for d in datasets
    }
    for metric in METRICS:
        chosen[metric] = choose(means[metric], settings, datasets)
        for d in datasets:
            setting = chosen[metric][0][d]
            rows[d] += [setting, f"{means[metric][setting][d]:.3f}"]
    columns = [
        "data set",
        "left out",
        "chosen by ROC AUC",
        "ROC AUC",
        "chosen by AP",
        "AP",
    ]
    lines += harness.table(columns, rows.values(), "lllrlr")
    lines.append("")
    for metric, label in METRICS.items():
        per_data, in_sample = chosen[metric]
        in_mean = np.mean([means[metric][in_sample][d] for d in datasets])
        out_mean = np.mean([means[metric][per_data[d]][d] for d in datasets])
        lines.append(
            f"- {label}: in-sample best {in_sample}, mean {in_mean:.3f}; "
            f"left-out mean {out_mean:.3f}; in-sample minus left-out "
            f"{in_mean - out_mean:+.3f} (target at most 0.01)."
        )
    harness.publish(lines, "anomaly_loo", args.write_docs)


if __name__ == "__main__":
    main()
