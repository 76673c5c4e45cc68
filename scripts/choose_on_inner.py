"""Choose a setting per test fold on the inner validation split (``INNER=1 bash scripts/cpu_tables.sh``).

    .venv/bin/python scripts/choose_on_inner.py [--other-folds] OUT.json NAME=results/.../DATASET-settingS ...
    e.g. .venv/bin/python scripts/choose_on_inner.py results/adnet_cpu-scales-choice/CHAOST2-setting1.json \
           single=results/adnet_cpu-inner/CHAOST2-setting1 scales-1-4=results/adnet_cpu-scales-1-4-inner/CHAOST2-setting1

Each candidate's model for test fold F was trained without fold F and without V = F + 1 (mod the number
of folds) and scored on V; the candidate with the best mean Dice on V is F's choice (ties: the first
named). With --other-folds, for settings that train nothing (registration's, scripts/registration_settings.sh),
every candidate was scored on every fold, and F's choice is the best mean Dice over all folds but F.
Either way fold F's volumes play no part in its choice. Writes OUT.json (the inner Dice of every candidate
and fold, the choices, the provenance) and prints the table.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medfss.data.datasets import get_dataset_spec
from medfss.data.io import write_text_atomic
from medfss.evaluation.report import restricted_mean_dice
from medfss.provenance import provenance


def main(argv: list[str]) -> int:
    other_folds = "--other-folds" in argv[1:2]
    args = argv[2:] if other_folds else argv[1:]
    if len(args) < 2 or any("=" not in arg for arg in args[1:]):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out = Path(args[0])
    candidates = dict(arg.split("=", 1) for arg in args[1:])
    results = {name: json.loads((Path(folder) / "results.json").read_text()) for name, folder in candidates.items()}
    validation_folds = [tuple(r["protocol"]["folds"]) for r in results.values()]
    if len(set(validation_folds)) != 1:
        print(f"medfss: the candidates scored different folds: {validation_folds}", file=sys.stderr)
        return 2
    n_folds = get_dataset_spec(next(iter(results.values()))["protocol"]["dataset"]).n_folds
    scored = validation_folds[0]
    if other_folds:
        splits = {test: [fold for fold in scored if fold != test] for test in scored}
    else:
        splits = {(validation - 1) % n_folds: [validation] for validation in scored}
    choices = {}
    for test, validation in splits.items():
        inner = {name: restricted_mean_dice(result, validation) for name, result in results.items()}
        best = max(inner, key=lambda name: (inner[name], -list(inner).index(name)))
        choices[str(test)] = {"validation_folds": validation, "inner_mean_dice": inner, "choice": best}
        print(f"test fold {test}: validation folds {','.join(map(str, validation))}: "
              + ", ".join(f"{name} {dice:.2f}" for name, dice in inner.items()) + f" -> {best}")
    record = {"candidates": candidates, "folds": choices, "provenance": provenance(argv)}
    write_text_atomic(json.dumps(record, indent=1) + "\n", out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
