"""Score a per-fold choice: each test fold's runs taken from the evaluation of the candidate it chose.

    .venv/bin/python scripts/score_choice.py CHOICE.json OUT_FOLDER --label LABEL NAME=FOLDER ...
    e.g. G=results/guided/seed1 FUSED=learned-per-class-thresholds-jlf/CHAOST2-setting1-extent-estimated
         .venv/bin/python scripts/score_choice.py $G/network-choice/CHAOST2-setting1-choice.json \
           $G/network-chosen-$FUSED --label "..." alpnet_cpu=$G/alpnet_cpu-$FUSED \
           alpnet_cpu-sp-min800-lr2e-2-4800=$G/alpnet_cpu-sp-min800-lr2e-2-4800-$FUSED \
           lmsnet_cpu-sp-min800-lr2e-2-4800=$G/lmsnet_cpu-sp-min800-lr2e-2-4800-$FUSED

CHOICE.json is scripts/choose_on_inner.py's (made on folds other than each test fold); every FOLDER holds a
results.json of the same protocol (classes, folds, supports, extent). Test fold F's runs are those of the candidate F
chose, so the table is what a user who follows the choice gets; the means are recomputed by evaluate's own
aggregation (:class:`medfss.evaluation.protocol.EvaluationResult`). A candidate's wall time is shared out by its
runs, so ``wall_time_s`` is what the chosen runs took. Writes OUT_FOLDER/results.json (the label, the scores,
which folder served each fold, the provenance) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medfss.data.io import write_text_atomic
from medfss.evaluation.protocol import EvaluationResult
from medfss.provenance import provenance

from choose_on_inner import candidate  # NAME=FOLDER, parsed alike (a script's own folder is on sys.path)

SAME_PROTOCOL = ("dataset", "setting", "classes", "folds", "support_indices", "shots", "chunks", "extent", "threshold")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="score_choice.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("choice", type=Path, help="scripts/choose_on_inner.py's choice file")
    parser.add_argument("out", type=Path, help="the folder to write results.json into")
    parser.add_argument("--label", required=True, help="the row's name in results/README.md")
    parser.add_argument("candidates", nargs="+", type=candidate, metavar="NAME=FOLDER",
                        help="a candidate of the choice file and the folder of its results.json")
    return parser.parse_args(argv)


def compose(choices: dict[int, str], results: dict[str, dict]) -> EvaluationResult:
    """The runs of every test fold F from ``results[choices[F]]``, with their share of its wall time."""
    evaluations = {name: EvaluationResult.from_json(record) for name, record in results.items()}
    first = next(iter(evaluations.values()))
    runs, seconds = [], 0.0
    for fold in first.config.folds:
        chosen = evaluations[choices[fold]]
        fold_runs = [r for r in chosen.runs if r.fold == fold]
        runs += fold_runs
        seconds += chosen.wall_time_s * len(fold_runs) / len(chosen.runs)
    return EvaluationResult("chosen per fold", first.config, tuple(runs), seconds)


def main(argv: list[str]) -> int:
    args = parse(argv[1:])  # a usage error exits with argparse's message and status 2
    folders = dict(args.candidates)
    record = json.loads(args.choice.read_text())
    choices = {int(fold): entry["choice"] for fold, entry in record["folds"].items()}
    missing = sorted(set(choices.values()) - set(folders))
    if missing:
        print(f"medfss: the choice names {', '.join(missing)}: give NAME=FOLDER for each", file=sys.stderr)
        return 2
    results = {name: json.loads((Path(folder) / "results.json").read_text()) for name, folder in folders.items()}
    protocols = {name: tuple(json.dumps(r["protocol"].get(k)) for k in SAME_PROTOCOL) for name, r in results.items()}
    if len(set(protocols.values())) != 1:
        print(f"medfss: the candidates' results follow different protocols ({', '.join(SAME_PROTOCOL)})",
              file=sys.stderr)
        return 2
    scored = results[next(iter(results))]["protocol"]["folds"]
    if sorted(choices) != sorted(scored):
        print(f"medfss: the choice covers folds {sorted(choices)}, the results folds {sorted(scored)}",
              file=sys.stderr)
        return 2
    result = compose(choices, results)
    out = {"label": args.label, **result.to_json(), "choice": str(args.choice),
           "folds_from": {str(f): folders[choices[f]] for f in sorted(choices)}, "provenance": provenance(argv)}
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(out, indent=1) + "\n", args.out / "results.json")
    print(result.format_table())
    print(f"wrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
