"""Leave-one-data-set-out choice among the VAE settings that anomaly.py recorded.

Choosing a default on the data sets it is then scored on flatters it. Here,
for each data set, the VAEOutlierDetector setting with the best mean ROC AUC
(and, separately, the best mean average precision) over the other data sets is
chosen and scored on the one left out. Variants of one data set (annthyroid
and thyroid, landsat and satellite, cardiotocography and cardio: the same
records) leave together, so that a setting is never chosen on a copy of the
data it is scored on. The left-out mean is then compared with the in-sample
mean, that of the setting best over all the data sets.

"Best over data sets" is measured by two rules. ``rank``, the rule the
defaults are chosen by: the highest average rank, the settings ranked within
each data set (ties share their mean rank), as Demsar (2006, "Statistical
comparisons of classifiers over multiple data sets", JMLR 7) recommends for
comparing methods over many data sets; each data set weighs the same, however
far apart the settings score on it. ``mean``: the highest mean score, which the
few data sets where the settings differ most can decide alone (the cardio
pair spans 0.50 to 0.88 ROC AUC over the settings), so that its choice flips
when they leave. The per-data-set table shows the rank rule's choices.

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
from scipy.stats import rankdata

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


def average_ranks(means, settings, datasets):
    """Each setting's rank within each data set (1 = worst; ties share their
    mean rank), averaged over ``datasets``, in the order of ``settings``."""
    scores = [[means[s][d] for d in datasets] for s in settings]
    return rankdata(scores, axis=0).mean(axis=1)


def best(means, settings, datasets, rule="rank"):
    """The setting best over ``datasets`` by ``rule`` ("rank" or "mean").

    The first of equals, in the order of ``settings``.
    """
    if rule == "rank":
        scores = average_ranks(means, settings, datasets)
    elif rule == "mean":
        scores = [np.mean([means[s][d] for d in datasets]) for s in settings]
    else:
        raise ValueError(f'rule must be "rank" or "mean", got {rule!r}')
    return settings[int(np.argmax(scores))]


def choose(means, settings, datasets, rule="rank"):
    """Per data set, the setting chosen on the others, and the in-sample best."""
    chosen = {
        d: best(
            means, settings, [o for o in datasets if o not in left_out_with(d)], rule
        )
        for d in datasets
    }
    return chosen, best(means, settings, datasets, rule)


def recorded(runs_file, selected):
    """The VAE settings, their runs and the data sets, from the runs file."""
    records = [result for result, _ in harness.read_runs(runs_file)]
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
    ranks = {
        m: dict(zip(settings, average_ranks(means[m], settings, datasets), strict=True))
        for m in METRICS
    }
    mean_rows = [
        [
            s,
            *(
                f"{np.mean(list(means[m][s].values())):.4f} ({ranks[m][s]:.2f})"
                for m in METRICS
            ),
        ]
        for s in settings
    ]
    lines += [
        f"Mean over the {len(datasets)} data sets of the means over seeds, and "
        f"(in brackets) the average rank among the {len(settings)} settings "
        f"({len(settings)} = best on every data set):",
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
        + " leave together), the setting of best average rank on the rest, and "
        "its score on the one left out:",
        "",
    ]
    chosen = {
        (rule, metric): choose(means[metric], settings, datasets, rule)
        for rule in ("rank", "mean")
        for metric in METRICS
    }
    rows = {
        d: [d, ", ".join(sorted(left_out_with(d) & set(datasets)))] for d in datasets
    }
    for metric in METRICS:
        for d in datasets:
            setting = chosen["rank", metric][0][d]
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
    for rule in ("rank", "mean"):
        for metric, label in METRICS.items():
            per_data, in_sample = chosen[rule, metric]
            in_mean = np.mean([means[metric][in_sample][d] for d in datasets])
            out_mean = np.mean([means[metric][per_data[d]][d] for d in datasets])
            lines.append(
                f"- {label}, best {rule}: in-sample {in_sample}, mean "
                f"{in_mean:.4f}; left-out mean {out_mean:.4f}; in-sample minus "
                f"left-out {in_mean - out_mean:+.4f} (target at most 0.01); "
                f"chosen for the left-out data sets: "
                + ", ".join(sorted(set(per_data.values())))
                + "."
            )
    harness.publish(lines, "anomaly_loo", args.write_docs)


if __name__ == "__main__":
    main()
