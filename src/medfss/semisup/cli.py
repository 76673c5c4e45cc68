"""What ``medfss train | evaluate | segment`` do for semi-supervised configs and models (called from medfss.cli)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from medfss.data.io import write_text_atomic
from medfss.errors import ConfigError
from medfss.provenance import provenance


def train_semisup(config_path, overrides: list[str], run_dir, resume=None) -> int:
    from medfss.semisup.config import load_semisup_config
    from medfss.semisup.train import train

    if resume is not None:
        raise ConfigError("semi-supervised runs cannot be resumed; start the run again")
    out = train(load_semisup_config(config_path, overrides), run_dir)
    print(f"wrote {out}")
    return 0


def evaluate_semisup(args) -> int:
    """``medfss evaluate --checkpoint R/model.pt --dataset ACDC --list val.list --out O``."""
    from medfss.semisup.checkpoint import load_model
    from medfss.semisup.evaluate import evaluate_list, format_table

    if args.list is None:
        raise ConfigError("a semi-supervised --checkpoint needs --list (e.g. val.list or test.list)")
    net, config, data = load_model(args.checkpoint)
    result = evaluate_list(net, config, model_name=data["model_name"], dataset=args.dataset,
                           data_root=args.data_root, list_file=args.list, device=args.device,
                           progress=not args.quiet)
    print(format_table(result))
    training_path = Path(args.checkpoint).parent / "training.json"
    training = json.loads(training_path.read_text()) if training_path.is_file() else None
    record = {"label": args.label or f"{data['model_name']} ({config.data.labeled_fraction:.0%} labelled)",
              **result, "config": data["config"], "checkpoint": {k: data[k] for k in ("torch_version", "torch_threads", "medfss_version")},
              "provenance": provenance()}
    if training is not None:
        record["training"] = {"summary": f"{training['iterations']} it, {training['wall_time_s'] / 60:.0f} min",
                              "stages": training["stages"],
                              "torch_threads": training["machine"]["torch_threads"]}
    write_text_atomic(json.dumps(record, indent=2) + "\n", args.out / "results.json")
    print(f"wrote {args.out / 'results.json'}")
    return 0


def segment_semisup(args) -> int:
    """``medfss segment --checkpoint R/model.pt --query scan.nii.gz --out labels.nii.gz``."""
    from medfss.semisup.segment import segment_fixed

    device = "cpu" if args.device == "auto" else args.device
    counts = segment_fixed(args.checkpoint, args.query, args.out, device=device)
    for label, voxels in counts.items():
        print(f"label {label}: {voxels} voxels")
    print(f"wrote {args.out}")
    return 0


def benchmark_semisup_cli(args) -> int:
    """``medfss benchmark --config configs/mper_acdc_cpu.yaml [--config ...] [--out F.json]``."""
    import sys

    from medfss.semisup.benchmark import benchmark_semisup, format_benchmark
    from medfss.semisup.config import load_semisup_config

    if args.sweep is not None:
        raise ConfigError("--sweep is for few-shot presets")
    rows = []
    for path in args.config:
        print(f"benchmarking {path} ...", file=sys.stderr)
        config = load_semisup_config(path, args.set)
        rows += [{"preset": Path(path).stem, **row}
                 for row in benchmark_semisup(config, steps=args.steps, device=args.device)]
    table = format_benchmark(rows)
    print(table)
    if args.out is not None:
        # timings stretch with other processes on the machine: say how loaded it was
        record = {"rows": rows, "table": table, "load_average_1_5_15min": list(os.getloadavg()),
                  "provenance": provenance()}
        write_text_atomic(json.dumps(record, indent=2) + "\n", args.out)
        print(f"wrote {args.out}")
    return 0
