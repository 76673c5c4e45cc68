"""Markdown tables from committed ``results.json`` files, beside the papers' numbers.

``medfss report results/`` finds every ``results.json`` under a folder and
writes one table per (data set, setting, shots): a row per result with the
per-class and mean Dice (mean ± std over runs), the folds it covers, and how it
was made (date, git revision, command). The published rows below are typed
from the papers (Dice, setting and table cited per row) and are marked as
such; nothing else in a table is typed by hand.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medfss.errors import InputFileError


@dataclass(frozen=True)
class PublishedRow:
    """One row of a paper's table: Dice per class (0-100) and the reported mean."""

    method: str
    source: str  # paper and table
    dataset: str
    setting: int | None  # None: the paper does not say (listed in a table of its own, never under a setting)
    dice: dict[str, float]
    mean: float


_SSL_ALPNET = "Ouyang et al. 2020 (SSL-ALPNet)"
_LMS_NET = "LMS-Net paper (ADNet protocol)"
_APSCL = "Huang et al. 2024 (APSCL; base classes trained on)"
PUBLISHED: tuple[PublishedRow, ...] = (
    PublishedRow("SSL-ALPNet", f"{_SSL_ALPNET}, Table 2", "CHAOST2", 1,
                 {"left_kidney": 81.92, "right_kidney": 85.18, "spleen": 72.18, "liver": 76.10}, 78.84),
    PublishedRow("SSL-PANet", f"{_SSL_ALPNET}, Table 2", "CHAOST2", 1,
                 {"left_kidney": 58.83, "right_kidney": 60.81, "spleen": 61.32, "liver": 71.73}, 63.17),
    PublishedRow("SSL-ALPNet", f"{_SSL_ALPNET}, Table 1", "CHAOST2", 2,
                 {"left_kidney": 73.63, "right_kidney": 78.39, "spleen": 67.02, "liver": 73.05}, 73.02),
    PublishedRow("SSL-PANet", f"{_SSL_ALPNET}, Table 1", "CHAOST2", 2,
                 {"left_kidney": 47.71, "right_kidney": 47.95, "spleen": 58.73, "liver": 64.99}, 54.85),
    PublishedRow("SSL-ALPNet", f"{_SSL_ALPNET}, Table 3", "CMR", 1,
                 {"LV-BP": 83.99, "LV-MYO": 66.74, "RV": 79.96}, 76.90),
    PublishedRow("SSL-PANet", f"{_SSL_ALPNET}, Table 3", "CMR", 1,
                 {"LV-BP": 70.43, "LV-MYO": 46.79, "RV": 69.52}, 62.25),
    # LMS-Net's paper does not name its setting on CHAOST2 (it follows ADNet's protocol); on CMR there is
    # only setting 1 (every class shares slices).
    PublishedRow("LMS-Net", f"{_LMS_NET}, Table I", "CHAOST2", None,
                 {"left_kidney": 82.85, "right_kidney": 89.34, "spleen": 74.97, "liver": 83.71}, 82.72),
    PublishedRow("fLMS-Net", f"{_LMS_NET}, Table I", "CHAOST2", None,
                 {"left_kidney": 78.28, "right_kidney": 89.02, "spleen": 72.23, "liver": 82.98}, 80.63),
    PublishedRow("LMS-Net", f"{_LMS_NET}, Table I", "CMR", 1,
                 {"LV-BP": 89.89, "LV-MYO": 68.98, "RV": 81.72}, 80.19),
    PublishedRow("fLMS-Net", f"{_LMS_NET}, Table I", "CMR", 1,
                 {"LV-BP": 89.72, "LV-MYO": 69.39, "RV": 80.59}, 79.90),
    PublishedRow("ADNet", f"{_LMS_NET}, Table I", "CHAOST2", None,
                 {"left_kidney": 73.86, "right_kidney": 85.80, "spleen": 72.29, "liver": 82.11}, 78.51),
    PublishedRow("ADNet", f"{_LMS_NET}, Table I", "CMR", 1,
                 {"LV-BP": 87.53, "LV-MYO": 62.43, "RV": 77.31}, 75.76),
    # APSCL's paper holds one organ out and trains on the others' labels; it does not say whether slices
    # showing the held-out organ stay in training, so its CHAOST2 row is a setting not stated.
    PublishedRow("APSCL", f"{_APSCL}, Table 1", "CHAOST2", None,
                 {"left_kidney": 84.66, "right_kidney": 89.66, "spleen": 80.82, "liver": 86.73}, 85.47),
    PublishedRow("APSCL", f"{_APSCL}, Table 1", "CMR", 1,
                 {"LV-BP": 90.79, "LV-MYO": 65.68, "RV": 77.49}, 77.99),
)


def find_results(root: str | Path) -> list[tuple[Path, dict]]:
    """Every evaluation ``results.json`` under ``root`` (sorted by path), parsed.

    Files of other commands (``results/reliability/results.json``) hold no
    ``protocol`` and are left out; semi-supervised evaluations are kept.
    """
    from medfss.semisup.report import is_semisup

    root = Path(root)
    if not root.is_dir():
        raise InputFileError(f"{root}: not a folder of results")
    found = []
    for path in sorted(root.rglob("results.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputFileError(f"{path}: not a readable results file ({exc})") from None
        if "protocol" in result or is_semisup(result):
            found.append((path, result))
    return found


def _row_name(result: dict) -> str:
    """The row a result gets: its ``--label``, else its model's name, marked when no query label was used."""
    name = result.get("label") or result["model"]
    return name + " [organ slices estimated]" if result["protocol"].get("extent", "gt") == "estimated" else name


def _cell(summary: dict | None) -> str:
    if summary is None or summary.get("mean") is None:
        return "–"
    std = summary.get("std")
    return f"{summary['mean']:.2f} ± {std:.2f}" if std else f"{summary['mean']:.2f}"


def _mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)} if values else {"mean": None}


def _restricted_summaries(result: dict, classes: list[str], folds: tuple[int, ...]) -> tuple[list[dict], dict]:
    """Per class and class-averaged: mean and std of ``result``'s run Dice on ``folds`` only (as evaluate)."""
    per_run: dict[tuple[int, int], list[float]] = defaultdict(list)
    summaries = []
    for name in classes:
        runs = [r for r in result["classes"].get(name, {}).get("runs", []) if r["fold"] in folds]
        summaries.append(_mean_std([r["dice"] for r in runs if r.get("dice") is not None]))
        for r in runs:
            if r.get("dice") is not None:
                per_run[r["fold"], r["support_index"]].append(r["dice"])
    return summaries, _mean_std([statistics.fmean(v) for v in per_run.values()])


def restricted_mean_dice(result: dict, folds: Sequence[int], classes: Sequence[str] | None = None) -> float | None:
    """The mean Dice of a results.json dict over its runs on ``folds`` only, of ``classes`` only (default: all);
    None when it has none there."""
    return _restricted_summaries(result, list(classes or result["classes"]), tuple(folds))[1]["mean"]


def _restricted(result: dict, classes: list[str], folds: tuple[int, ...]) -> tuple[list[str], str]:
    """Dice cells of ``result`` recomputed from its runs on ``folds`` only (same aggregation as evaluate)."""
    summaries, mean = _restricted_summaries(result, classes, folds)
    return [_cell(s) for s in summaries], _cell(mean)


def _provenance_line(result: dict, path: Path, root: Path) -> str:
    prov = result.get("provenance") or {}
    machine = prov.get("machine") or {}
    where = f"{machine.get('cpu_count', '?')} CPU cores" + (f", {machine['gpu']}" if machine.get("gpu") else "")
    return (f"`{path.relative_to(root)}`: {prov.get('date', '?')}, git {prov.get('git_revision', '?')}, "
            f"{where}, {result.get('wall_time_s', 0):.0f} s; `{prov.get('command', '?')}`")


def is_experiment(path: Path, root: Path) -> bool:
    """A tagged run (``results/MODEL_PRESET-TAG/...``, see scripts/cpu_tables.sh), not a preset's own row."""
    return "-" in path.relative_to(root).parts[0]


def _restricted_rows(result: dict, classes: list[str], fold_sets: set[tuple[int, ...]], name: str,
                     training: str) -> list[str]:
    """``result`` on each fold set narrower than its own: compare like with like."""
    supports = ",".join(map(str, result["protocol"]["support_indices"]))
    lines = []
    for folds in sorted(f for f in fold_sets if set(f) < set(result["protocol"]["folds"])):
        class_cells, mean_cell = _restricted(result, classes, folds)
        lines.append(f"| {name} (only folds {','.join(map(str, folds))}) | {training} | "
                     f"{','.join(map(str, folds))} | {supports} | " + " | ".join(class_cells)
                     + f" | **{mean_cell}** |")
    return lines


SEED_SUFFIX = re.compile(r"^(?P<variant>.+)-seed(?P<seed>\d+)$")


def seed_groups(entries: list[tuple[Path, dict]], root: Path) -> dict[str, list[tuple[int, dict]]]:
    """Experiments repeated with other training seeds: ``{variant folder: [(seed, result), ...]}``.

    ``results/X-seedN/...`` (``TAG=...-seedN`` with ``--set runtime.seed=N``) joins
    ``results/X/...``, the seed-0 run of the same variant, when both cover the same
    folds and supports; the seed-0 run comes first.
    """
    by_folder = {path.relative_to(root).parts[0]: result for path, result in entries}
    groups: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for folder, result in sorted(by_folder.items()):
        match = SEED_SUFFIX.match(folder)
        base = by_folder.get(match["variant"]) if match else None
        if base is not None and _same_protocol(base, result):
            groups[match["variant"]].append((int(match["seed"]), result))
    return {variant: [(0, by_folder[variant]), *sorted(runs, key=lambda r: r[0])]
            for variant, runs in groups.items()}


def _same_protocol(a: dict, b: dict) -> bool:
    keys = ("folds", "support_indices", "shots", "setting", "extent")
    return all(a["protocol"].get(k) == b["protocol"].get(k) for k in keys)


def _seed_rows(groups: dict[str, list[tuple[int, dict]]]) -> list[str]:
    """One row per variant: its mean Dice under each training seed, and their mean ± std."""
    lines = ["| variant | seeds | mean Dice per seed | mean ± std over seeds |", "|---|---|---|---|"]
    for variant, runs in groups.items():
        means = [result["mean"]["dice"]["mean"] for _, result in runs]
        name = runs[0][1].get("label") or variant
        lines.append(f"| {name} | {', '.join(str(seed) for seed, _ in runs)} | "
                     f"{', '.join(f'{m:.2f}' for m in means)} | **{_cell(_mean_std(means))}** |")
    return lines


def _rows(entries: list[tuple[Path, dict]], classes: list[str], fold_sets: set[tuple[int, ...]]) -> list[str]:
    """One table row per result, plus its restriction to every narrower fold set of the table."""
    lines = []
    for _, result in entries:
        protocol = result["protocol"]
        cells = [_cell(result["classes"].get(c, {}).get("dice")) for c in classes]
        training = result.get("training", {}).get("summary", "none")
        name = _row_name(result)
        supports = ",".join(map(str, protocol["support_indices"]))
        lines.append(f"| {name} | {training} | {','.join(map(str, protocol['folds']))} | {supports} | "
                     + " | ".join(cells) + f" | **{_cell(result['mean']['dice'])}** |")
        lines += _restricted_rows(result, classes, fold_sets, name, training)
    return lines


def _summary_section(groups: dict[tuple[str, int, int], list[tuple[Path, dict]]], root: Path) -> list[str]:
    """One table across data sets and settings: the mean Dice of every 1-shot preset row on all folds.

    A row qualifies in a (data set, setting) column when it is not a tagged
    experiment, uses the ground-truth organ extent, and covers the widest fold
    set of that column (the full cross-validation); the published means follow.
    """
    columns = sorted(key[:2] for key in groups if key[2] == 1)
    cells: dict[str, dict[tuple[str, int], str]] = defaultdict(dict)
    order: dict[str, tuple] = {}  # trained models, then the no-training floors (by name), then the papers
    for column in columns:
        main = [result for path, result in groups[(*column, 1)] if not is_experiment(path, root)
                and result["protocol"].get("extent", "gt") == "gt"]
        widest = max((len(result["protocol"]["folds"]) for result in main), default=0)
        # rows of one name (a floor re-run beside a guided table on fewer supports): the one with the most supports
        for result in sorted(main, key=lambda r: len(r["protocol"]["support_indices"])):
            if len(result["protocol"]["folds"]) == widest:
                name = _row_name(result)
                cells[name][column] = _cell(result["mean"]["dice"])
                order[name] = (0 if result.get("training") else 1, name)
    for index, row in enumerate(PUBLISHED):
        if (row.dataset, row.setting) in columns:
            name = f"{row.method} (*published*, {row.source.split(', Table')[0]})"
            cells[name][row.dataset, row.setting] = f"{row.mean:.2f}"
            order.setdefault(name, (2, index))
    if not cells:
        return []
    lines = ["## Summary: mean Dice, 1-shot, every fold", "",
             "The preset rows of the tables below that cover every fold of theirs, beside the papers' means.", "",
             "| method | " + " | ".join(f"{dataset} setting {setting}" for dataset, setting in columns) + " |",
             "|---|" + "---|" * len(columns)]
    lines += [f"| {name} | " + " | ".join(cells[name].get(column, "–") for column in columns) + " |"
              for name in sorted(cells, key=order.__getitem__)]
    return [*lines, ""]


def format_report(root: str | Path) -> str:
    """The markdown report of every result under ``root``, one table per (data set, setting, shots).

    Tagged experiments (:func:`is_experiment`) get a table of their own below
    each main table, with the floors restricted to their folds for reference.
    """
    from medfss.semisup.report import is_semisup, semisup_sections

    root = Path(root)
    groups: dict[tuple[str, int, int], list[tuple[Path, dict]]] = defaultdict(list)
    semisup = []
    for path, result in find_results(root):
        if is_semisup(result):
            semisup.append((path, result))
        else:
            groups[result["dataset"], result["setting"], result["shots"]].append((path, result))
    lines = ["# Results", "",
             "Generated by `medfss report results --out results/README.md` from the `results.json` files below;",
             "each names the command, date, machine and git revision that produced it. Dice (0-100) per class",
             "and mean, as mean ± standard deviation over runs (folds x support choices). Rows marked",
             "*published* are the papers' numbers (ResNet-101, 256 x 256, COCO init), for reference.",
             "Rows marked *[organ slices estimated]* use no query label at all (`--extent estimated`, what",
             "`medfss segment` does); every other row takes the organ's slices from the query's ground truth,",
             "as the literature's protocol does. Each table of experiments lists tagged runs",
             "(`TAG=name scripts/cpu_tables.sh ... --set KEY=VALUE`): the CPU preset with the overrides",
             "named in the row (\"first CPU preset\": lr 5e-3 with elastic query deformation, the preset",
             "before these experiments chose the current one).", ""]
    lines += _summary_section(groups, root)
    for (dataset, setting, shots), entries in sorted(groups.items()):
        classes = list(entries[0][1]["protocol"]["classes"])
        header = ["| method | training | folds | supports | " + " | ".join(classes) + " | mean |",
                  "|---|---|---|---|" + "---|" * (len(classes) + 1)]
        main = [e for e in entries if not is_experiment(e[0], root)]
        experiments = [e for e in entries if is_experiment(e[0], root)]
        lines += [f"## {dataset}, setting {setting}, {shots}-shot", "", *header]
        lines += _rows(main, classes, {tuple(r["protocol"]["folds"]) for _, r in main})
        if shots == 1:
            for row in PUBLISHED:
                if row.dataset == dataset and row.setting == setting:
                    cells = [f"{row.dice[c]:.2f}" if c in row.dice else "–" for c in classes]
                    lines.append(f"| {row.method} (*published*, {row.source}) | paper preset | 5 | – | "
                                 + " | ".join(cells) + f" | {row.mean:.2f} |")
        if experiments:
            floors = [e for e in main if e[1].get("training") is None]
            lines += ["", f"Experiments on {dataset}, setting {setting}, {shots}-shot:", "", *header]
            lines += _rows(experiments, classes, set())
            fold_sets = {tuple(r["protocol"]["folds"]) for _, r in experiments}
            for _, result in floors:
                lines += _restricted_rows(result, classes, fold_sets, _row_name(result), "none")
            seeds = seed_groups(experiments, root)
            if seeds:
                lines += ["", f"Training seeds on {dataset}, setting {setting}, {shots}-shot (seed 0: the row named, "
                          "others: its `-seedN` runs; std over seeds):", "", *_seed_rows(seeds)]
        lines += ["", "Sources:", ""]
        lines += [f"- {_provenance_line(result, path, root)}" for path, result in entries]
        lines.append("")
    lines += _unstated_setting_section({dataset for dataset, _, _ in groups})
    lines += semisup_sections(semisup, root)
    lines += _benchmark_sections(root)
    return "\n".join(lines)


def _unstated_setting_section(datasets: set[str]) -> list[str]:
    """The published rows whose paper does not say which setting they were measured in, per data set."""
    lines = []
    for dataset in sorted(datasets):
        rows = [row for row in PUBLISHED if row.dataset == dataset and row.setting is None]
        if not rows:
            continue
        classes = list(rows[0].dice)
        lines += [f"## {dataset}, published, setting not stated", "",
                  "The paper does not say whether these were measured in setting 1 or 2, so they sit under "
                  "neither table above.", "",
                  "| method | " + " | ".join(classes) + " | mean |", "|---|" + "---|" * (len(classes) + 1)]
        lines += [f"| {row.method} (*published*, {row.source}) | " + " | ".join(f"{row.dice[c]:.2f}" for c in classes)
                  + f" | {row.mean:.2f} |" for row in rows]
        lines.append("")
    return lines


def _benchmark_sections(root: Path) -> list[str]:
    """The tables of ``medfss benchmark --out root/benchmark/NAME.json``, with their machines."""
    lines = []
    for path in sorted((root / "benchmark").glob("*.json")):
        record = json.loads(path.read_text())
        prov = record.get("provenance", {})
        machine = prov.get("machine", {})
        device = machine.get("gpu") or f"CPU ({machine.get('processor', '?')}, {machine.get('cpu_count', '?')} "\
            f"cores, {record['rows'][0].get('torch_threads', '?')} torch threads)"
        lines += [f"## Speed and memory: {path.stem}", "",
                  f"{device}; {prov.get('date', '?')}, git {prov.get('git_revision', '?')}; "
                  f"`{prov.get('command', '?')}`. Training: median of timed steps on random episodes "
                  "of the preset's size; inference: one query volume of 256 x 256 slices "
                  "through the predictor (resizing included); peak memory of a fresh process "
                  "(resident set on CPU, allocated on GPU).", "", record["table"], ""]
    return lines
