"""Choose the default model's recipe on the folds it trains on, never on the fold it is scored on.

    python -m medfss.weights.selection configs/default_model/candidates.yaml --out selection.json

The default model is trained on the images of every fold but one (the held-out
fold, the demo's patients) and scored on that fold. Its recipe is chosen among
candidate recipes (config + ``--set`` overrides) that each have a cross-fold
evaluation: the candidate with the best mean Dice over the runs of the *other*
folds wins, each of those folds scored by the model trained without it. The
held-out fold's labels never enter the choice; its scores are written beside
the choice for reference only. The selection file records the table, the rule
and the training arguments of the chosen recipe, which the model card quotes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from medfss.config import read_yaml
from medfss.data.io import write_text_atomic
from medfss.errors import ConfigError
from medfss.evaluation.report import restricted_mean_dice
from medfss.provenance import provenance

RULE = ("the candidate with the best mean Dice over the runs of every fold but the held-out one "
        "(ties: the earlier candidate); the held-out fold's scores are not used")


@dataclass(frozen=True)
class Candidate:
    """One training recipe and the cross-fold evaluation of its per-fold models."""

    name: str
    results: Path  # a `medfss evaluate` results.json over the folds
    config: Path  # the `medfss train --config`
    overrides: tuple[str, ...] = ()  # its `--set KEY=VALUE`s

    def train_arguments(self, dataset: str, fold: int, run_dir: str) -> list[str]:
        """The ``medfss train`` arguments that train this recipe on every fold but ``fold``."""
        sets = [f"data.dataset={dataset}", f"data.fold={fold}", "data.cache_dir=runs/superpixels", *self.overrides]
        return ["--config", str(self.config), *(a for s in sets for a in ("--set", s)),
                "--run-dir", run_dir, "--resume", "auto"]


@dataclass(frozen=True)
class CandidateList:
    dataset: str
    held_out_fold: int
    candidates: tuple[Candidate, ...]


def read_candidates(path: str | Path) -> CandidateList:
    """The candidate list of a YAML file: ``dataset``, ``held_out_fold`` and ``candidates``
    (each ``name``, ``results``, ``config`` and optional ``overrides``)."""
    values = read_yaml(path)
    try:
        candidates = tuple(Candidate(str(c["name"]), Path(c["results"]), Path(c["config"]),
                                     tuple(str(o) for o in c.get("overrides") or ())) for c in values["candidates"])
        listing = CandidateList(str(values["dataset"]), int(values["held_out_fold"]), candidates)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{path}: not a candidate list (dataset, held_out_fold, candidates with name, results, "
                          f"config; {type(error).__name__}: {error})") from None
    if not candidates or len({c.name for c in candidates}) != len(candidates):
        raise ConfigError(f"{path}: candidates must be a non-empty list of distinct names")
    return listing


def _result(candidate: Candidate, dataset: str, held_out_fold: int) -> dict:
    try:
        result = json.loads(candidate.results.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"candidate {candidate.name}: cannot read {candidate.results} ({error})") from None
    folds = result["protocol"]["folds"]
    if result["dataset"] != dataset or held_out_fold not in folds or len(folds) < 2:
        raise ConfigError(f"candidate {candidate.name}: {candidate.results} is a {result['dataset']} evaluation of "
                          f"folds {folds}; the selection needs {dataset} with fold {held_out_fold} and others")
    return result


def select(listing: CandidateList) -> dict:
    """The selection record (module docstring): each candidate's Dice on the other folds, the choice, the rule."""
    rows = []
    for candidate in listing.candidates:
        result = _result(candidate, listing.dataset, listing.held_out_fold)
        others = [f for f in result["protocol"]["folds"] if f != listing.held_out_fold]
        rows.append({"name": candidate.name, "results": str(candidate.results), "label": result.get("label"),
                     "selection_folds": others, "selection_mean_dice": restricted_mean_dice(result, others),
                     "held_out_mean_dice_not_used": restricted_mean_dice(result, [listing.held_out_fold])})
    best = max(range(len(rows)), key=lambda i: (rows[i]["selection_mean_dice"], -i))
    chosen = listing.candidates[best]
    run_dir = f"runs/{chosen.name}/{listing.dataset}-setting1/fold{listing.held_out_fold}"  # as scripts/cpu_tables.sh
    return {"dataset": listing.dataset, "held_out_fold": listing.held_out_fold, "rule": RULE, "candidates": rows,
            "chosen": {"name": chosen.name, "model": read_yaml(chosen.config)["model"]["name"],
                       "selection_mean_dice": rows[best]["selection_mean_dice"],
                       "run_dir": run_dir,
                       "train_arguments": chosen.train_arguments(listing.dataset, listing.held_out_fold, run_dir)}}


def selection_note(selection: dict) -> str:
    """One sentence for the model card: what was chosen, on what, among what."""
    chosen = selection["chosen"]
    others = ", ".join(f"{r['name']} {r['selection_mean_dice']:.2f}" for r in selection["candidates"]
                       if r["name"] != chosen["name"])
    folds = ",".join(map(str, selection["candidates"][0]["selection_folds"]))
    return (f"Recipe `{chosen['name']}` chosen among {len(selection['candidates'])} candidate recipes by the mean "
            f"Dice of their per-fold models on folds {folds} (the folds this model trains on; fold "
            f"{selection['held_out_fold']} not used): {chosen['selection_mean_dice']:.2f}, against {others} "
            f"(`python -m medfss.weights.selection`, results/default_model/selection.json).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medfss.weights.selection", description=__doc__.splitlines()[0])
    parser.add_argument("candidates", type=Path, help="YAML candidate list (configs/default_model/candidates.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="selection JSON to write")
    args = parser.parse_args(argv)
    try:
        selection = select(read_candidates(args.candidates))
    except ConfigError as error:
        parser.exit(2, f"error: {error}\n")
    command = ["python", "-m", "medfss.weights.selection", *(sys.argv[1:] if argv is None else argv)]
    write_text_atomic(json.dumps({**selection, "provenance": provenance(command)}, indent=2) + "\n", args.out)
    print(selection_note(selection))
    print("train: medfss train " + shlex.join(selection["chosen"]["train_arguments"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
