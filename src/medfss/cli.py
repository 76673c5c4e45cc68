"""The ``medfss`` command line.

Every subcommand is a small function taking the parsed arguments; user
mistakes raise :class:`~medfss.errors.MedfssError`, which ``main`` prints as
one line on stderr with exit status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from medfss import __version__
from medfss.errors import ConfigError, MedfssError


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding the data sets (default: $MEDFSS_DATA_ROOT or ../shared/data)")


def cmd_data_summary(args) -> int:
    from medfss.data.datasets import Dataset
    from medfss.data.summary import describe_volume, format_summary

    dataset = Dataset.from_name(args.name, args.data_root)
    rows = [describe_volume(dataset.load(c), dataset.spec.classes) for c in dataset.case_ids]
    print(format_summary(dataset, rows))
    return 0


def training_records(checkpoint: str, folds, spec, classes) -> dict:
    """What training cost, per model, from the training record beside each checkpoint."""
    from medfss.checkpoints import TRAINING_RECORD, read_training_record
    from medfss.evaluation.predictors import checkpoint_path, group_name

    runs = {}
    for fold in folds:
        for name in classes:
            model = checkpoint_path(checkpoint, fold, group_name(spec, name))
            key = str(Path(model).parent / TRAINING_RECORD)
            record = read_training_record(model) if key not in runs else None
            if record is not None:
                runs[key] = {"fold": fold, "iterations": record["iterations"],
                             "wall_time_s": record["wall_time_s"]}
    if not runs:
        return {"summary": "unknown", "runs": {}}
    iterations = sorted({r["iterations"] for r in runs.values()})
    minutes = sum(r["wall_time_s"] for r in runs.values()) / len(runs) / 60
    return {"summary": f"{'/'.join(map(str, iterations))} it, {minutes:.0f} min per model",
            "runs": runs}


def cmd_evaluate(args) -> int:
    from medfss.data.datasets import Dataset
    from medfss.data.io import write_text_atomic
    from medfss.evaluation.predictors import predictor_factory
    from medfss.evaluation.protocol import ProtocolConfig, evaluate
    from medfss.provenance import provenance

    dataset = Dataset.from_name(args.dataset, args.data_root)
    classes = tuple(args.classes.split(",")) if args.classes else dataset.spec.eval_classes
    for name in classes:
        dataset.spec.class_index(name)  # fails early on a misspelt class
    config = ProtocolConfig(
        dataset=dataset.spec.name,
        classes=classes,
        folds=tuple(args.folds),
        support_indices=tuple(args.support_index),
        shots=args.shots,
        chunks=args.chunks,
        setting=args.setting,
        seed=args.seed,
        extent=args.extent,
    )
    predictor_for = predictor_factory(args.model, args.checkpoint, spec=dataset.spec, device=args.device)
    result = evaluate(dataset, predictor_for, config, model_name=args.model,
                      progress=not args.quiet)
    print(result.format_table())
    record = {"label": args.label or args.model, **result.to_json(), "provenance": provenance()}
    if args.checkpoint is not None:
        record["training"] = training_records(args.checkpoint, config.folds, dataset.spec, classes)
    out = Path(args.out)
    write_text_atomic(json.dumps(record, indent=2) + "\n", out / "results.json")
    print(f"wrote {out / 'results.json'}")
    return 0


def cmd_train(args) -> int:
    from medfss.config import load_config
    from medfss.training.loop import train

    overrides = list(args.set)
    if args.data_root is not None:
        overrides.append(f"data.data_root={args.data_root}")
    config = load_config(args.config, overrides)
    resume = args.resume
    if resume == "auto":
        last = args.run_dir / "checkpoints" / "last.ckpt"
        resume = last if last.is_file() else None
        if resume is not None:
            print(f"resuming from {last}")
    out = train(config, args.run_dir, resume=resume)
    print(f"wrote {out}")
    return 0


def cmd_benchmark(args) -> int:
    from medfss.config import load_config
    from medfss.data.io import write_text_atomic
    from medfss.evaluation.benchmark import BenchmarkSettings, benchmark, format_benchmark
    from medfss.provenance import provenance

    settings = BenchmarkSettings(train_steps=args.steps, query_slices=args.query_slices, device=args.device)
    key, _, values = (args.sweep or "").partition("=")
    if args.sweep is not None and not (key and values):
        raise ConfigError(f"--sweep takes KEY=V1,V2,..., got {args.sweep!r}")
    variants = [(f" {key.rsplit('.', 1)[-1]}={v}", [f"{key}={v}"]) for v in values.split(",")] if key else [("", [])]
    rows = []
    for path in args.config:
        for suffix, overrides in variants:
            config = load_config(path, [*args.set, *overrides])
            print(f"benchmarking {path}{suffix} ...", file=sys.stderr)
            rows.append({"preset": Path(path).stem + suffix, **benchmark(config, settings)})
    print(format_benchmark(rows))
    if args.out is not None:
        record = {"rows": rows, "table": format_benchmark(rows), "provenance": provenance()}
        write_text_atomic(json.dumps(record, indent=2) + "\n", args.out)
        print(f"wrote {args.out}")
    return 0


def cmd_explain(args) -> int:
    import numpy as np
    import torch

    from medfss.checkpoints import load_model
    from medfss.data.datasets import Dataset
    from medfss.data.episodes import Episode
    from medfss.evaluation.explain import explain_figure
    from medfss.inference.predictor import resize_slices

    dataset = Dataset.from_name(args.dataset, args.data_root)
    class_index = dataset.spec.class_index(args.class_name)
    support, query = dataset.load(args.support_case), dataset.load(args.query_case)
    support_z = int(np.median(support.class_slices(class_index)))  # raises if the class is absent
    top, bottom = query.class_extent(class_index)
    query_z = (top + bottom) // 2 if args.query_slice is None else args.query_slice
    if not 0 <= query_z < query.num_slices:
        raise ConfigError(f"--query-slice {query_z} is outside case {args.query_case}'s 0..{query.num_slices - 1}")
    model, config = load_model(args.checkpoint)
    size = (config.data.image_size,) * 2

    def slice_of(array, z, mode):  # [H, W, D] -> [1, h, w] at the model's size
        return resize_slices(torch.from_numpy(np.ascontiguousarray(array[..., z], dtype=np.float32))[None],
                             size, mode)

    episode = Episode(support_images=slice_of(support.image, support_z, "bilinear")[None, None],
                      support_masks=(slice_of(support.label == class_index, support_z, "bilinear") > 0.5
                                     ).float()[None],
                      query_images=slice_of(query.image, query_z, "bilinear")[None])
    info = explain_figure(model, episode, args.out)
    print(f"wrote {info['path']}: {info['description']} of {config.model.name} on case {args.query_case} "
          f"slice {query_z} ({args.class_name}, support case {args.support_case} slice {support_z})")
    return 0


def cmd_report(args) -> int:
    from medfss.data.io import write_text_atomic
    from medfss.evaluation.report import format_report

    text = format_report(args.root)
    if args.out is None:
        print(text)
    else:
        write_text_atomic(text, args.out)
        print(f"wrote {args.out}")
    return 0


def _slice_range(text: str) -> tuple[int | None, int | None]:
    """``a:b`` (either side may be empty) -> (a, b), half-open as in Python."""
    start, sep, stop = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return (int(start) if start.strip() else None), (int(stop) if stop.strip() else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a slice range start:stop, e.g. 10:40, got {text!r}") from None


def cmd_segment(args) -> int:
    from medfss.scan_segmentation import segment

    if len(args.support_image) != len(args.support_mask):
        raise ConfigError(f"give one --support-mask per --support-image, got {len(args.support_image)} "
                          f"images and {len(args.support_mask)} masks")
    result = segment(args.query, list(zip(args.support_image, args.support_mask)), args.label,
                     checkpoint=args.checkpoint, axis=args.axis, query_range=args.query_range,
                     orientation=args.orientation, modality=args.modality, largest_component=args.largest_component,
                     threshold=args.threshold, device=args.device, batch_size=args.batch_size,
                     out=args.out, probabilities=args.probabilities, overlay=args.overlay,
                     summary=args.summary, progress=not args.quiet)
    for r in result.per_label:
        print(f"label {r.label}: {r.voxels} voxels, {r.millilitres:.1f} mL "
              f"(slices {r.extent[0]}:{r.extent[1]} along axis {result.summary['settings']['axis']})")
    print(f"wrote {args.out}")
    return 0


def cmd_demo(args) -> int:
    from medfss.demo import run_demo

    run_demo(args.out, data_root=args.data_root, checkpoint=args.checkpoint, query_case=args.query_case,
             support_case=args.support_case, device=args.device, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medfss", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"medfss {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="inspect data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    summary = data_sub.add_parser("summary", help="per volume: slices, spacing, classes and their slice ranges")
    summary.add_argument("name", help="registered data set (CHAOST2, CMR, SABS) or an nnU-Net raw folder")
    _add_data_args(summary)
    summary.set_defaults(func=cmd_data_summary)

    ev = sub.add_parser("evaluate", help="run the few-shot evaluation protocol (1-way k-shot, 3 chunks)")
    ev.add_argument("--model", required=True,
                    help="a no-training baseline (copy-support, intensity-prototype) or a trained model name")
    ev.add_argument("--checkpoint", default=None,
                    help="trained weights; '{fold}' in the path is replaced by the fold number")
    ev.add_argument("--dataset", required=True)
    _add_data_args(ev)
    ev.add_argument("--setting", type=int, choices=(1, 2), default=1)
    ev.add_argument("--folds", type=_int_list, default=[0, 1, 2, 3, 4], help="comma-separated, e.g. 0,1,2,3,4")
    ev.add_argument("--shots", type=int, default=1)
    ev.add_argument("--support-index", type=_int_list, default=[0],
                    help="support volume(s) within each test fold; several are averaged (e.g. 0,1,2)")
    ev.add_argument("--classes", default=None, help="comma-separated subset of the evaluated classes")
    ev.add_argument("--chunks", type=int, default=3)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--extent", choices=("gt", "estimated"), default="gt",
                    help="query slices predicted: the class extent of the query's ground truth (gt, the "
                         "literature's protocol) or estimated from the support's relative extent, as "
                         "'medfss segment' does (estimated); the whole volume is scored either way")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--out", required=True, type=Path, help="folder for results.json")
    ev.add_argument("--label", default=None, help="row name in reports (default: the model name)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_evaluate)

    tr = sub.add_parser("train", help="train an episodic model (self-supervised or supervised)")
    tr.add_argument("--config", required=True, type=Path,
                    help="a preset YAML, e.g. configs/alpnet_cpu.yaml (what it leaves out keeps the defaults)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set data.fold=1 --set optim.iterations=500")
    tr.add_argument("--run-dir", required=True, type=Path,
                    help="folder for config.yaml, checkpoints, logs and the exported model.pt")
    tr.add_argument("--resume", default=None,
                    help="a training checkpoint to continue exactly where it stopped, or 'auto' for "
                         "RUN_DIR/checkpoints/last.ckpt when it exists")
    _add_data_args(tr)
    tr.set_defaults(func=cmd_train)

    bench = sub.add_parser("benchmark", help="training and inference speed and peak memory of presets")
    bench.add_argument("--config", required=True, type=Path, action="append",
                       help="a preset YAML; repeat to compare several")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override applied to every preset")
    bench.add_argument("--sweep", default=None, metavar="KEY=V1,V2,...",
                       help="one row per value of KEY for every preset, e.g. model.options.num_blocks=1,2,3")
    bench.add_argument("--steps", type=int, default=5, help="timed training steps (after one warm-up)")
    bench.add_argument("--query-slices", type=int, default=32, help="slices of the timed query volume")
    bench.add_argument("--device", default="cpu", help="cpu or cuda")
    bench.add_argument("--out", type=Path, default=None, help="write the rows and the machine as JSON")
    bench.set_defaults(func=cmd_benchmark)

    seg = sub.add_parser(
        "segment", help="segment a scan from one or more labelled scans (no query label needed)",
        description="Segment the labels of the support masks in the query scan. Several --label values "
                    "give one multi-label output holding those values (0 = background; where labels "
                    "compete, the most probable wins). The output has the query's shape, affine and header "
                    "(uint8). Slices are cut along --axis (default: the largest spacing); the organ's "
                    "slices are estimated from its relative position in the support scans, and only its "
                    "largest 3D connected component is kept unless --no-largest-component.")
    seg.add_argument("--query", required=True, type=Path, help="the scan to segment (3D NIfTI)")
    seg.add_argument("--support-image", required=True, action="append", type=Path,
                     help="a labelled scan; repeat for several supports (k-shot)")
    seg.add_argument("--support-mask", required=True, action="append", type=Path,
                     help="the label map of the preceding --support-image (some slices may be unlabelled)")
    seg.add_argument("--label", required=True, type=_int_list,
                     help="label value(s) of the support masks to segment, comma-separated, e.g. 1,2")
    seg.add_argument("--out", required=True, type=Path, help="the label NIfTI to write (.nii.gz)")
    seg.add_argument("--checkpoint", type=Path, default=None, help="a trained model (model.pt); required for now")
    seg.add_argument("--probabilities", type=Path, default=None,
                     help="also write the float32 foreground probabilities (one volume per label: 4D if several)")
    seg.add_argument("--overlay", type=Path, default=None, help="also write a PNG montage with contours")
    seg.add_argument("--summary", type=Path, default=None,
                     help="also write a JSON summary: voxels and mL per label, slices used, runtime, inputs")
    seg.add_argument("--axis", type=int, choices=(0, 1, 2), default=None,
                     help="voxel axis of the query to slice along (default: the one with the largest spacing)")
    seg.add_argument("--query-range", type=_slice_range, default=None, metavar="START:STOP",
                     help="query slices (half-open, along the slicing axis) covering what the support scans "
                          "cover (default: all)")
    seg.add_argument("--orientation", default=None, metavar="AXCODES",
                     help="voxel order the model works in, e.g. LAS (default: the one recorded in the "
                          "checkpoint, that of its training volumes; RAS if none)")
    seg.add_argument("--modality", choices=("auto", "MR", "CT"), default="auto",
                     help="intensity normalisation: MR z-score, CT window [-125, 275] HU then z-score; auto: "
                          "CT when the minimum is below -500")
    seg.add_argument("--largest-component", action=argparse.BooleanOptionalAction, default=True,
                     help="keep only the largest 3D connected component of each label (default: on)")
    seg.add_argument("--threshold", type=float, default=0.5, help="foreground probability threshold")
    seg.add_argument("--device", default="auto", help="auto (a GPU when present), cpu or cuda")
    seg.add_argument("--batch-size", type=int, default=8, help="query slices per model call")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    seg.set_defaults(func=cmd_segment)

    demo = sub.add_parser(
        "demo", help="segment liver, kidneys and spleen of one CHAOST2 patient from another's labels",
        description="Runs 'medfss segment' with the bundled default model on CHAOST2 patient "
                    "--query-case from patient --support-case's labels (no query label used), then prints "
                    "per-organ Dice and HD95 against the query's ground truth and writes the prediction, "
                    "an overlay PNG and a JSON summary. Without CHAOST2 under the data root it runs on a "
                    "synthetic phantom instead.")
    demo.add_argument("--data-root", default=None, help="folder holding CHAOST2/ (default: $MEDFSS_DATA_ROOT "
                                                        "or ../shared/data)")
    demo.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder")
    demo.add_argument("--checkpoint", type=Path, default=None, help="a model.pt (default: the bundled model)")
    demo.add_argument("--query-case", default="2", help="CHAOST2 case id of the scan to segment")
    demo.add_argument("--support-case", default="1", help="CHAOST2 case id of the labelled example")
    demo.add_argument("--device", default="auto", help="auto (a GPU when present), cpu or cuda")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    ex = sub.add_parser("explain", help="draw what a model computes on one query slice: LMS-Net's per-stage "
                                       "masks, duals and entropies (Fig. 7), APSCL's spatial attention, "
                                       "ADNet's anomaly score and threshold")
    ex.add_argument("--checkpoint", required=True, type=Path,
                    help="a trained lmsnet, flmsnet, apscl or adnet model file")
    ex.add_argument("--dataset", required=True)
    _add_data_args(ex)
    ex.add_argument("--class", dest="class_name", required=True, help="e.g. liver")
    ex.add_argument("--support-case", required=True, help="case id of the labelled support volume")
    ex.add_argument("--query-case", required=True, help="case id of the query volume")
    ex.add_argument("--query-slice", type=int, default=None,
                    help="slice index in the query (default: the middle of the class extent)")
    ex.add_argument("--out", required=True, type=Path, help="PNG file")
    ex.set_defaults(func=cmd_explain)

    report = sub.add_parser("report", help="markdown tables of every results.json under a folder")
    report.add_argument("root", type=Path, help="folder searched for results.json files (e.g. results)")
    report.add_argument("--out", type=Path, default=None, help="write here instead of printing")
    report.set_defaults(func=cmd_report)

    from medfss.data.prepare import add_prepare_parser
    add_prepare_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MedfssError as exc:
        print(f"medfss: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medfss: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
