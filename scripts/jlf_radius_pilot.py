"""Pilot: joint label fusion's time and Dice with fewer voxels searched across thick slices.

    .venv/bin/python scripts/jlf_radius_pilot.py DATASET FOLD OUT.json
    e.g. OMP_NUM_THREADS=1 .venv/bin/python scripts/jlf_radius_pilot.py CHAOST2 1 results/floors/jlf-radius-pilot/CHAOST2-fold1.json

Support 0 of FOLD (the fold's first volume) registered onto each of the fold's other volumes (the registration
cache in runs/registration-cache, made by scripts/registration_settings.sh or guided_tables.sh, is reused;
missing registrations are computed), then fused per class by :func:`medfss.registration.ants.joint_label_fusion`
at ANTs' radii (patch 2, search 3 along every axis) and at radii per axis (H, W, D) that search less across the
slice axis, each timed (no fusion cache) and scored by Dice without any query label; the warped mask alone
(voting's label at one shot) beside them. A measurement of cost against accuracy for planning, not a choice:
a setting for the tables is chosen per test fold on the other folds (scripts/registration_settings.sh).
Writes OUT.json (every query and class, the means, the provenance) and prints a line per query and class.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict

import numpy as np

from medfss.data.datasets import Dataset
from medfss.data.io import write_text_atomic
from medfss.evaluation.metrics import segmentation_scores
from medfss.inference.plan import SupportScan
from medfss.provenance import provenance
from medfss.registration.ants import JointLabelFusionConfig, joint_label_fusion
from medfss.registration.predictor import RegistrationPredictor

CANDIDATES = {  # name -> JLF settings (patch and search radius in voxels, along H, W, D)
    "ants-default": JointLabelFusionConfig(),
    "patch-2-2-1-search-3-3-1": JointLabelFusionConfig(patch_radius=(2, 2, 1), search_radius=(3, 3, 1)),
    "patch-2-2-0-search-3-3-0": JointLabelFusionConfig(patch_radius=(2, 2, 0), search_radius=(3, 3, 0)),
}


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    dataset, fold, out = Dataset.from_name(argv[0]), int(argv[1]), argv[2]
    registration = RegistrationPredictor(cache_dir="runs/registration-cache")
    case_ids = dataset.fold_case_ids(fold)
    support = dataset.load(case_ids[0])
    rows = []
    for query_id in case_ids[1:]:
        query = dataset.load(query_id)
        for index, name in dataset.spec.classes.items():
            if name not in dataset.spec.eval_classes:
                continue
            warped = registration.warp(SupportScan(support.image, support.label == index, support.spacing),
                                       query.image, query.spacing)
            truth = query.label == index

            def dice(probability: np.ndarray) -> float:
                return segmentation_scores(probability > 0.5, truth, query.spacing).dice

            row = {"query": query_id, "class": name, "dice": {"warped mask": dice(warped.mask)}, "seconds": {}}
            for candidate, config in CANDIDATES.items():
                start = time.perf_counter()
                fused = joint_label_fusion(query.image, query.spacing, [warped.image], [warped.mask],
                                           registration.config, config)  # [H, W, D]
                row["seconds"][candidate] = time.perf_counter() - start
                row["dice"][candidate] = dice(fused)
            rows.append(row)
            print(f"{query_id} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in row["dice"].items()) + " | "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in row["seconds"].items()), flush=True)
    means = {what: {k: float(np.mean([r[what][k] for r in rows])) for k in rows[0][what]}
             for what in ("dice", "seconds")}
    print("mean Dice: " + ", ".join(f"{k} {v:.2f}" for k, v in means["dice"].items()))
    print("mean seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in means["seconds"].items()))
    record = {"dataset": argv[0], "fold": fold, "support": case_ids[0], "candidates":
              {k: asdict(v) for k, v in CANDIDATES.items()}, "registration": registration.record(),
              "rows": rows, "mean": means, "provenance": provenance(["scripts/jlf_radius_pilot.py", *argv])}
    write_text_atomic(json.dumps(record, indent=1) + "\n", out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
