"""The semi-supervised section of ``medfss report``: our rows beside MPER's Tables II and III.

Every ``results.json`` with ``task: semi-supervised`` lands here (the few-shot
tables never see them): one table per data set with a row per (model,
labelled fraction), the published rows of the same fractions below them, and
for ACDC the loss ablation (Table III, 5 % labels) built from the runs whose
stored config switches a loss term off. Published numbers are typed from the
paper and marked as such.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

_MPER = "MPER paper"
# (method, labelled fraction, Dice, Jaccard, 95HD, ASD): MPER Table II (ACDC test set; 95HD, ASD in voxels).
TABLE_II = (
    ("U-Net", 0.05, 47.83, 37.01, 31.16, 12.62), ("UA-MT", 0.05, 46.04, 35.97, 20.08, 7.75),
    ("SASSNet", 0.05, 57.77, 46.14, 20.05, 6.06), ("DTC", 0.05, 56.90, 45.67, 23.36, 7.39),
    ("URPC", 0.05, 55.87, 44.64, 13.60, 3.74), ("MC-Net", 0.05, 62.85, 52.29, 7.62, 2.33),
    ("SS-Net", 0.05, 65.83, 55.38, 6.67, 2.28), ("Co-BioNet", 0.05, 87.46, 77.93, 1.11, 1.11),
    ("BCP", 0.05, 87.59, 78.67, 1.90, 0.67), ("MPER", 0.05, 88.64, 80.21, 1.51, 0.60),
    ("U-Net", 0.1, 79.41, 68.11, 9.35, 2.70), ("UA-MT", 0.1, 81.65, 70.64, 6.88, 2.02),
    ("SASSNet", 0.1, 84.50, 74.34, 5.42, 1.86), ("DTC", 0.1, 84.29, 73.92, 12.81, 4.01),
    ("URPC", 0.1, 83.10, 72.41, 4.84, 1.53), ("MC-Net", 0.1, 86.44, 77.04, 5.50, 1.84),
    ("SS-Net", 0.1, 86.78, 77.67, 6.07, 1.40), ("Co-BioNet", 0.1, 88.49, 79.76, 3.70, 1.14),
    ("BCP", 0.1, 88.84, 80.62, 3.98, 1.17), ("MPER", 0.1, 89.69, 81.88, 1.65, 0.56),
    ("U-Net", 1.0, 91.44, 84.59, 4.30, 0.99),
)
# (L_cons^l, L_cons^p, L_cont, Dice, Jaccard, 95HD, ASD): MPER Table III (ACDC, 5 % labels).
TABLE_III = ((True, False, False, 87.18, 78.02, 3.73, 1.07), (True, True, False, 88.05, 79.26, 2.73, 0.80),
             (True, True, True, 88.64, 80.21, 1.51, 0.60))
MODEL_ORDER = ("supervised-only", "mean-teacher-copy-paste", "multi-prototype")


def is_semisup(result: dict) -> bool:
    return result.get("task") == "semi-supervised"


def loss_terms(result: dict) -> tuple[bool, bool, bool]:
    """(L_cons^l, L_cons^p, L_cont) of eq. 6 that the result's training used."""
    model = (result.get("config") or {}).get("model", {})
    prototypes = result["model"] == "multi-prototype"
    return (True, prototypes and model.get("prototype_consistency", True),
            prototypes and model.get("gamma", 0.1) > 0)


def _num(summary: dict) -> str:
    return "–" if summary.get("mean") is None else f"{summary['mean']:.2f}"


def _row(name: str, fraction: str, training: str, result: dict) -> str:
    classes = [f"{c['dice']['mean']:.2f}" if c["dice"]["mean"] is not None else "–"
               for c in result["classes"].values()]
    m = result["mean"]
    dice = f"{m['dice']['mean']:.2f} ± {m['dice']['std']:.2f}" if m["dice"]["mean"] is not None else "–"
    return (f"| {name} | {fraction} | {training} | " + " | ".join(classes)
            + f" | **{dice}** | {_num(m['jaccard'])} | {_num(m['hd95'])} | {_num(m['asd'])} |")


def _order(entry: tuple[Path, dict]) -> tuple:
    path, result = entry
    model = result["model"]
    return (result["labeled_fraction"], MODEL_ORDER.index(model) if model in MODEL_ORDER else 9, str(path))


BENCHMARK_FOLDER = "mper_benchmark"  # medfss benchmark --config configs/mper_*.yaml --out results/mper_benchmark/X.json


def semisup_sections(entries: list[tuple[Path, dict]], root: Path) -> list[str]:
    """Markdown lines of the semi-supervised tables and benchmarks (empty without either)."""
    return _result_sections(entries, root) + _benchmark_sections(root)


def _benchmark_sections(root: Path) -> list[str]:
    lines = []
    for path in sorted((root / BENCHMARK_FOLDER).glob("*.json")):
        record = json.loads(path.read_text())
        prov, load = record["provenance"], record.get("load_average_1_5_15min", ["?"])
        machine = prov["machine"]
        device = machine.get("gpu") or f"CPU ({machine['processor']}, {machine['cpu_count']} cores, " \
            f"{record['rows'][0]['torch_threads']} torch thread(s), load average {load[0]:.1f} while measuring)"
        lines += [f"## Speed and memory, semi-supervised: {path.stem}", "", f"{device}; {prov['date']}, git "
                  f"{prov['git_revision']}; `{prov['command']}`. Training: median ms of timed iterations on "
                  "random batches of the preset's sizes (every loss term and update of the stage); inference: "
                  "one volume of the size named; peak memory of a fresh process (resident set on CPU).", "",
                  record["table"], ""]
    return lines


TEST_VOLUMES = {"ACDC": 40, "LA": 20}  # the literature's test lists


def is_inner_split(result: dict) -> bool:
    """Scored on the split its training held out (``data.holdout_list``): where the CPU preset's settings are chosen."""
    holdout = ((result.get("config") or {}).get("data") or {}).get("holdout_list")
    return holdout is not None and result["list"] == holdout


def _result_sections(entries: list[tuple[Path, dict]], root: Path) -> list[str]:
    lines = []
    tables = sorted({(r["dataset"], is_inner_split(r)) for _, r in entries}, key=lambda k: (k[0], not k[1]))
    for dataset, inner in tables:  # per data set: the inner split's table first
        rows = sorted(((p, r) for p, r in entries if r["dataset"] == dataset and is_inner_split(r) == inner),
                      key=_order)
        classes = list(rows[0][1]["classes"])
        if inner:
            lines += [f"## Semi-supervised segmentation (MPER): {dataset}, inner validation split", "",
                      f"Scored in 3D on `{rows[0][1]['list']}`: training patients held out of the training of every "
                      "row here (`data.holdout_list`). The CPU preset's settings are chosen on these scores, never on "
                      "the validation volumes. Dice and Jaccard in %, HD95 and ASD in voxels.", ""]
        else:
            lines += [f"## Semi-supervised segmentation (MPER): {dataset}", "",
                      f"Trained on the labelled fraction of the training set, the rest unlabelled; scored in 3D on "
                      f"the volumes of `{rows[0][1]['list']}`. Dice and Jaccard in %, HD95 and ASD in voxels (the "
                      "HDF5 files carry no spacing; the literature reports voxels too). Dice: mean ± std over "
                      f"volumes. Published rows: the paper's test set ({TEST_VOLUMES.get(dataset, 'its')} volumes), "
                      "full-size networks and schedules.", ""]
        lines += ["| method | labelled | training | " + " | ".join(classes) + " | Dice | Jaccard | HD95 | ASD |",
                  "|---|---|---|" + "---|" * (len(classes) + 4)]
        for _, result in rows:
            lines.append(_row(result.get("label") or result["model"], f"{result['labeled_fraction']:.0%}",
                              result.get("training", {}).get("summary", "?"), result))
        lines += _seed_means([r for _, r in rows])
        if dataset == "ACDC" and not inner:
            fractions = {round(r["labeled_fraction"], 4) for _, r in rows} | {1.0}
            for method, fraction, *scores in TABLE_II:
                if fraction in fractions:
                    lines.append(f"| {method} (*published*, {_MPER} Table II) | {fraction:.0%} | paper preset | "
                                 + " | ".join("–" for _ in classes) + f" | {scores[0]:.2f} | "
                                 + " | ".join(f"{s:.2f}" for s in scores[1:]) + " |")
            lines += _ablation(rows)
        lines += ["", "Sources:", ""]
        lines += [f"- `{path.relative_to(root)}`: {r['provenance']['date']}, git {r['provenance']['git_revision']}, "
                  f"{r['provenance']['machine']['torch_threads']} torch thread(s), torch "
                  f"{r['provenance']['machine']['torch']}, evaluation {r['wall_time_s']:.0f} s; "
                  f"`{r['provenance']['command']}`" for path, r in rows]
        lines.append("")
    return lines


def _without_seed(result: dict) -> str:
    """What a run is apart from its seed: the model, list and stored config with ``runtime.seed`` removed."""
    config = result.get("config") or {}
    runtime = {k: v for k, v in (config.get("runtime") or {}).items() if k != "seed"}
    return json.dumps([result["model"], result["list"], {**config, "runtime": runtime}], sort_keys=True)


def _seed_means(results: list[dict]) -> list[str]:
    """One row per group of runs that differ only in their seed: the mean of the runs, Dice ± std over seeds."""
    groups: dict[str, list[dict]] = {}
    for result in results:
        groups.setdefault(_without_seed(result), []).append(result)
    lines = []
    for group in groups.values():
        classes = list(group[0]["classes"])
        dice = {c: [r["classes"][c]["dice"]["mean"] for r in group] for c in classes}
        means = {m: [r["mean"][m]["mean"] for r in group] for m in ("dice", "jaccard", "hd95", "asd")}
        if len(group) < 2 or None in (*means["dice"], *(v for values in dice.values() for v in values)):
            continue
        seeds = sorted((r.get("config") or {}).get("runtime", {}).get("seed", 0) for r in group)
        label = re.sub(r", seed \d+", "", group[0].get("label") or group[0]["model"])
        cell = lambda values: "–" if None in values else f"{statistics.fmean(values):.2f}"  # noqa: E731
        lines.append(f"| {label}, **mean of seeds {', '.join(map(str, seeds))}** | "
                     f"{group[0]['labeled_fraction']:.0%} | {len(group)} runs | "
                     + " | ".join(cell(dice[c]) for c in classes)
                     + f" | **{cell(means['dice'])} ± {statistics.stdev(means['dice']):.2f}** (std over seeds) | "
                     + " | ".join(cell(means[m]) for m in ("jaccard", "hd95", "asd")) + " |")
    return lines


def _ablation(rows: list[tuple[Path, dict]]) -> list[str]:
    """Table III: the 5 % runs by the loss terms they trained with, beside the paper's."""
    mark = lambda on: "✓" if on else ""  # noqa: E731
    ours = [(loss_terms(r), r) for _, r in rows if r["labeled_fraction"] == 0.05 and r["model"] != "supervised-only"]
    if not ours:
        return []
    lines = ["", "Loss ablation (MPER Table III), ACDC, 5 % labels:", "",
             "| L_cons^l | L_cons^p | L_cont | method | Dice | Jaccard | HD95 | ASD |", "|---|---|---|---|---|---|---|---|"]
    for terms, r in sorted(ours, key=lambda t: t[0]):
        m = r["mean"]
        lines.append(f"| {' | '.join(mark(t) for t in terms)} | {r.get('label') or r['model']} | "
                     f"**{_num(m['dice'])}** | {_num(m['jaccard'])} | {_num(m['hd95'])} | {_num(m['asd'])} |")
    for *terms, dice, jaccard, hd95, asd in TABLE_III:
        lines.append(f"| {' | '.join(mark(t) for t in terms)} | *published*, {_MPER} Table III | {dice:.2f} | "
                     f"{jaccard:.2f} | {hd95:.2f} | {asd:.2f} |")
    return lines
