"""Choose a setting per test fold on the inner validation split (``INNER=1 bash scripts/cpu_tables.sh``).

    .venv/bin/python scripts/choose_on_inner.py [--other-folds] [--per-group] OUT.json NAME=results/.../DATASET-settingS ...
    e.g. .venv/bin/python scripts/choose_on_inner.py results/adnet_cpu-scales-choice/CHAOST2-setting1.json \
           single=results/adnet_cpu-inner/CHAOST2-setting1 scales-1-4=results/adnet_cpu-scales-1-4-inner/CHAOST2-setting1

Each candidate's model for test fold F was trained without fold F and without V = F + 1 (mod the number
of folds) and scored on V; the candidate with the best mean Dice on V is F's choice (ties: the first
named). With --other-folds, for settings that train nothing (registration's, scripts/registration_settings.sh),
every candidate was scored on every fold, and F's choice is the best mean Dice over all folds but F.
Either way fold F's volumes play no part in its choice. With --per-group (setting 2, where each test group
of the data set has its own model per fold) the choice is made per fold and group, on the group's classes.
Writes OUT.json (the inner Dice of every candidate and fold, the choices, the provenance) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medfss.data.datasets import get_dataset_spec
from medfss.data.io import write_text_atomic
from medfss.evaluation.report import restricted_mean_dice
from medfss.provenance import provenance


def candidate(text: str) -> tuple[str, str]:
    """NAME=FOLDER, a candidate's name and the folder of its inner results.json."""
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=FOLDER, got {text!r}")
    return name, folder


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="choose_on_inner.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other-folds", action="store_true",
                        help="every candidate scored every fold: choose each fold on all the others")
    parser.add_argument("--per-group", action="store_true",
                        help="choose per setting-2 test group too, on that group's classes (one model per group)")
    parser.add_argument("out", type=Path, help="the choice file to write (OUT.json)")
    parser.add_argument("candidates", nargs="+", type=candidate, metavar="NAME=FOLDER",
                        help="a candidate's name and the folder of its results.json")
    return parser.parse_args(argv)


def choose(results: dict[str, dict], validation: list[int], classes: tuple[str, ...] | None, what: str) -> dict:
    """The candidate with the best mean Dice on the validation folds (of ``classes`` only; ties: the first named)."""
    inner = {name: restricted_mean_dice(result, validation, classes) for name, result in results.items()}
    best = max(inner, key=lambda name: (inner[name], -list(inner).index(name)))
    print(f"{what}: validation folds {','.join(map(str, validation))}"
          + (f" ({', '.join(classes)})" if classes else "") + ": "
          + ", ".join(f"{name} {dice:.2f}" for name, dice in inner.items()) + f" -> {best}")
    return {"inner_mean_dice": inner, "choice": best}


def main(argv: list[str]) -> int:
    args = parse(argv[1:])  # a usage error exits with argparse's message and status 2
    out, candidates = args.out, dict(args.candidates)
    results = {name: json.loads((Path(folder) / "results.json").read_text()) for name, folder in candidates.items()}
    validation_folds = [tuple(r["protocol"]["folds"]) for r in results.values()]
    if len(set(validation_folds)) != 1:
        print(f"medfss: the candidates scored different folds: {validation_folds}", file=sys.stderr)
        return 2
    spec = get_dataset_spec(next(iter(results.values()))["protocol"]["dataset"])
    if args.per_group and not spec.groups:
        print(f"medfss: {spec.name} has no setting-2 groups to choose per group", file=sys.stderr)
        return 2
    scored = validation_folds[0]
    if args.other_folds:
        splits = {test: [fold for fold in scored if fold != test] for test in scored}
    else:
        splits = {(validation - 1) % spec.n_folds: [validation] for validation in scored}
    choices = {}
    for test, validation in splits.items():
        choices[str(test)] = {"validation_folds": validation, **choose(results, validation, None, f"test fold {test}")}
        if args.per_group:
            choices[str(test)]["groups"] = {group: choose(results, validation, classes, f"  {group}")
                                            for group, classes in spec.groups.items()}
    record = {"candidates": candidates, "folds": choices, "provenance": provenance(argv)}
    write_text_atomic(json.dumps(record, indent=1) + "\n", out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
