"""The ``medfss`` command line.

Every subcommand is a small function taking the parsed arguments; user
mistakes raise :class:`~medfss.errors.MedfssError`, which ``main`` prints as
one line on stderr with exit status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from medfss import __version__
from medfss.errors import ConfigError, MedfssError


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def announce_new_folder(folder: Path) -> None:
    """Say that ``folder`` does not exist and will be created (outputs never appear silently)."""
    if not folder.exists():
        print(f"medfss: creating output folder {folder} (it did not exist)")


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding the data sets (default: $MEDFSS_DATA_ROOT or ../shared/data)")


def _add_registration_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("registration (--model registration / --method registration)")
    group.add_argument("--registration-transform", choices=("affine", "syn"), default="syn",
                       help="affine, or affine then SyN (default)")
    group.add_argument("--registration-metric", choices=("mattes", "CC", "meansquares", "GC"), default="mattes",
                       help="similarity of both stages (mattes: mutual information)")
    group.add_argument("--registration-syn-metric", choices=("mattes", "CC", "meansquares", "GC"), default=None,
                       help="similarity of the SyN stage alone (CC: ANTs' SyNCC; default: --registration-metric)")
    group.add_argument("--registration-iterations", type=_int_list, default=None, metavar="N1,N2,...",
                       help="SyN iterations per level, coarse to fine (default ANTsPy's 40,20,0)")
    group.add_argument("--registration-seed", type=int, default=None, metavar="N",
                       help="seed of the affine stage's random metric sampling (default: a fixed one; 0: ANTs "
                            "seeds it from the clock, another transform on every run); a registration repeats "
                            "bit for bit at one thread (OMP_NUM_THREADS=1)")
    group.add_argument("--registration-label-fusion", choices=("vote", "jlf"), default="vote",
                       help="the supports' warped labels fused by majority voting (default), or by ANTs' joint "
                            "label fusion (each atlas weighted per voxel by how well its warped image matches the "
                            "query, its label taken from its best-matching patch within 3 voxels; with one support "
                            "too; some 10-30 s more per query and class): registration alone's output and the "
                            "registration guidance's prior")
    group.add_argument("--registration-cache", type=Path, default=None, metavar="DIR",
                       help="keep each (support, query, settings) registration in DIR and reuse it across runs")


def _registration_predictor(args):
    from medfss.registration.ants import RegistrationConfig
    from medfss.registration.predictor import RegistrationPredictor

    given = {"syn_iterations": args.registration_iterations, "seed": args.registration_seed}
    config = RegistrationConfig(transform=args.registration_transform, metric=args.registration_metric,
                                syn_metric=args.registration_syn_metric,
                                **{name: value for name, value in given.items() if value is not None})
    return RegistrationPredictor(config, cache_dir=args.registration_cache, label_fusion=args.registration_label_fusion)


def _add_guidance_args(parser: argparse.ArgumentParser, default: str) -> None:
    group = parser.add_argument_group("registration guidance (--guidance registration)")
    choices = ("auto", "position", "registration", "none") if default == "auto" else ("position", "registration")
    group.add_argument("--guidance", choices=choices, default=default,
                       help="how the organ's slices and support slices are found without a query label: "
                            "from the support's relative position (the chunk rule), or by registering each "
                            "support onto the query and fusing the network with the warped labels"
                            + ("; none: the network alone on every slice of the query range" if default == "auto"
                               else "") + f"; auto: registration when ANTsPy is installed (default {default})")
    group.add_argument("--guidance-weight", type=float, default=None, metavar="W",
                       help="average the network and the registered prior with this weight of the network, instead "
                            "of GuidanceConfig's default fusion")
    group.add_argument("--guidance-sigma-mm", type=float, default=None, metavar="MM",
                       help="average fusion: in-plane Gaussian softening of the registered prior")
    group.add_argument("--guidance-support-slices", choices=("chunks", "registered"), default=None,
                       help="average fusion: support slices for the network, the chunk rule or slice z of the warped "
                            "supports")


def resolve_guidance(requested: str) -> str:
    """``auto`` -> ``registration`` when ANTsPy is installed, else ``position`` (saying why)."""
    from medfss.registration.ants import ants_available

    if requested != "auto":
        return requested
    if ants_available():
        return "registration"
    print("medfss: registration guidance needs ANTsPy (pip install antspyx); the organ's slices are estimated "
          "from the support's relative position instead", file=sys.stderr)
    return "position"


def _guidance_config(args):
    from medfss.registration.guided import GuidanceConfig

    given = {"network_weight": args.guidance_weight, "prior_sigma_mm": args.guidance_sigma_mm,
             "support_slices": args.guidance_support_slices}
    given = {k: v for k, v in given.items() if v is not None}
    return GuidanceConfig(**given, **({"fusion": "average"} if given else {}))  # the average's settings: average


def _guide(args, protocol=None):
    """The guide of the command line; ``protocol`` (evaluate) resolves ``--guidance-selection`` per fold."""
    from medfss.registration.guided import Guide

    fold_configs, class_configs = {}, {}
    if protocol is not None and args.guidance_selection is not None:
        from medfss.registration.selection import read_fold_configs

        fold_configs, class_configs = read_fold_configs(args.guidance_selection, protocol.dataset, protocol.folds)
    return Guide(_registration_predictor(args), _guidance_config(args), fold_configs, class_configs)


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


def cmd_prepare(args) -> int:
    from medfss.data.prepare import prepare

    card = prepare(args.source, args.input, args.out, size=args.size, spacing=args.spacing,
                   slice_spacing=args.slice_spacing, modality=args.modality,
                   mr_top_percent=args.mr_top_percent, image_glob=args.image_glob,
                   label_glob=args.label_glob, progress=not args.quiet)
    spacing = " x ".join(f"{a:g}" if a == b else f"{a:g}-{b:g}"
                         for a, b in zip(card["spacing_min"], card["spacing_max"]))
    print(f"wrote {card['n_volumes']} volumes to {args.out} ({', '.join(card['shapes'])}; {spacing} mm)")
    if card["skipped"]:
        print(f"skipped {len(card['skipped'])} images without a label (listed in dataset_card.json)")
    return 0


def _add_protocol_args(parser: argparse.ArgumentParser) -> None:
    """The protocol's data set, folds and supports (evaluate, select-guidance)."""
    parser.add_argument("--dataset", required=True)
    _add_data_args(parser)
    parser.add_argument("--setting", type=int, choices=(1, 2), default=1)
    parser.add_argument("--folds", type=_int_list, default=[0, 1, 2, 3, 4], help="comma-separated, e.g. 0,1,2,3,4")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--support-index", type=_int_list, default=[0],
                        help="support volume(s) within each test fold; several are averaged (e.g. 0,1,2)")
    parser.add_argument("--classes", default=None, help="comma-separated subset of the evaluated classes")
    parser.add_argument("--chunks", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)


def _protocol(args, extent: str):
    """The data set and the :class:`ProtocolConfig` of ``_add_protocol_args``' arguments."""
    from medfss.data.datasets import Dataset
    from medfss.evaluation.protocol import ProtocolConfig

    dataset = Dataset.from_name(args.dataset, args.data_root)
    classes = tuple(args.classes.split(",")) if args.classes else dataset.spec.eval_classes
    for name in classes:
        dataset.spec.class_index(name)  # fails early on a misspelt class
    return dataset, ProtocolConfig(dataset=dataset.spec.name, classes=classes, folds=tuple(args.folds),
                                   support_indices=tuple(args.support_index), shots=args.shots,
                                   chunks=args.chunks, setting=args.setting, seed=args.seed, extent=extent)


def _learned_summary(selection: dict) -> str:
    """What a nested fit of the learned fusion did: the folds of each fit and the coefficients of the fit on all."""
    from medfss.registration.fusion import FEATURES

    lines = []
    for fold, fit in selection["folds"].items():
        lines.append(f"fold {fold}: learned fusion fitted on folds {fit['fitted_on_folds']} ({fit['voxels']} voxels)")
        for name, entry in fit.get("classes", {}).items():
            losses = ", ".join(f"{form} {loss:.4f}" for form, loss in entry["inner_log_loss"].items())
            dice = ", ".join(f"{t} {d:.2f}" for t, d in entry["inner_sampled_dice"].items())
            lines.append(f"  {name}: {entry['form']} coefficients, threshold {entry['threshold']:g} "
                         f"(inner log-loss: {losses}; inner sampled Dice by threshold: {dice})")
    coefficients = selection["best_overall"]["config"]["coefficients"]
    lines.append(f"fitted on every fold: intercept {coefficients[0]:+.3f}, "
                 + ", ".join(f"{name} {c:+.3f}" for name, c in zip(FEATURES, coefficients[1:])))
    return "\n".join(lines)


def _average_summary(selection: dict) -> str:
    """What a nested choice of the average fusion chose per fold, and its cross-validated Dice."""
    lines = []
    for fold, choice in selection["folds"].items():
        chosen = choice["config"]
        lines.append(f"fold {fold}: w={chosen['network_weight']:g} sigma={chosen['prior_sigma_mm']:g} mm "
                     f"support slices {chosen['support_slices']} (other folds {choice['inner_mean_dice']:.2f}) "
                     f"-> Dice {choice['test_mean_dice']:.2f}")
    best = selection["best_overall"]
    lines.append(f"nested cross-validation Dice {selection['nested_mean_dice']:.2f}; best over all folds: "
                 f"w={best['config']['network_weight']:g} sigma={best['config']['prior_sigma_mm']:g} mm "
                 f"{best['config']['support_slices']} ({best['mean_dice']:.2f}, not a test score)")
    return "\n".join(lines)


def cmd_select_guidance(args) -> int:
    from medfss.data.io import write_text_atomic
    from medfss.evaluation.predictors import predictor_factory
    from medfss.provenance import provenance
    from medfss.registration.fusion import FEATURES
    from medfss.registration.selection import FusionGrid, nested_learned_fusion, nested_selection, sweep

    dataset, config = _protocol(args, "estimated")
    config = config.resolved(dataset.spec)
    base = _guidance_config(args)
    grid = FusionGrid(support_slices=args.support_slices, network_weights=args.weights,
                      prior_sigmas_mm=args.sigmas_mm)
    learned = args.fusion == "learned"
    if (args.per_class or args.class_thresholds) and not learned:
        raise ConfigError("--per-class and --class-thresholds fit the learned fusion per class: they need "
                          "--fusion learned")
    if args.class_thresholds and not all(0 < t < 1 for t in args.class_thresholds):
        raise ConfigError(f"--class-thresholds must lie strictly between 0 and 1, got {args.class_thresholds}")
    if args.samples_per_query < 1:
        raise ConfigError(f"--samples-per-query must be at least 1, got {args.samples_per_query}")
    unknown = sorted(set(args.fusion_features) - set(FEATURES))
    if unknown:
        raise ConfigError(f"--fusion-features: unknown {', '.join(unknown)}; choose from {', '.join(FEATURES)}")
    networks_for = predictor_factory(args.model, args.checkpoint, spec=dataset.spec, device=args.device)
    announce_new_folder(args.out)
    registration = _registration_predictor(args)
    swept = sweep(dataset, networks_for, registration, config, [] if learned else grid.configs(base), base,
                  samples_per_query=args.samples_per_query if learned else 0, progress=not args.quiet)
    if learned:
        selection = nested_learned_fusion(swept.samples, base, features=args.fusion_features,
                                          per_class=args.per_class, thresholds=args.class_thresholds)
        print(_learned_summary(selection))
    else:
        selection = nested_selection(swept.results)
        print(_average_summary(selection))
    record = {"model": args.model, "checkpoint": args.checkpoint, "protocol": config.to_dict(),
              "registration": registration.record(), "selection": selection, "provenance": provenance()}
    record |= {"samples_per_query": args.samples_per_query} if learned else {"grid": asdict(grid)}
    if args.checkpoint is not None:
        record["training"] = training_records(args.checkpoint, config.folds, dataset.spec, config.classes)
    out = Path(args.out) / "selection.json"
    write_text_atomic(json.dumps(record, indent=2) + "\n", out)
    print(f"wrote {out}")
    return 0


def _read_result(path: Path, role: str):
    """An evaluation's results.json, or a one-line error naming its ``role``."""
    from medfss.evaluation.protocol import EvaluationResult

    try:
        record = json.loads(Path(path).read_text())
        return record, EvaluationResult.from_json(record)
    except FileNotFoundError:
        raise ConfigError(f"{role} {path} does not exist (write it with 'medfss evaluate')") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{role} {path} is not a results.json of 'medfss evaluate' "
                          f"({type(error).__name__}: {error})") from None


def cmd_select_failure_thresholds(args) -> int:
    from medfss.data.datasets import Dataset
    from medfss.data.io import write_text_atomic
    from medfss.provenance import provenance
    from medfss.registration.failure import (FailureThresholds, nested_failure_thresholds, registration_checks,
                                             untrusted, with_thresholds)
    from medfss.registration.guided import GuidanceConfig
    from medfss.registration.predictor import RegistrationPredictor
    from medfss.registration.selection import fold_configs, read_selection

    guided_record, guided = _read_result(args.guided, "--guided")
    _, fallback = _read_result(args.fallback, "--fallback")
    if "guidance" not in guided_record:
        raise ConfigError(f"--guided {args.guided} was not scored with --guidance registration")
    for name, result in (("--guided", guided), ("--fallback", fallback)):
        if result.config.extent != "estimated":
            raise ConfigError(f"{name} must score the tool's output (--extent estimated): the thresholds are "
                              "chosen without any query label")
    if guided.config != fallback.config:
        raise ConfigError("--guided and --fallback must score the same protocol (data set, folds, supports, "
                          "classes); they differ")
    config = guided.config
    dataset = Dataset.from_name(config.dataset, args.data_root)
    selection = read_selection(args.selection)
    folds_scored_with, classes_scored_with = fold_configs(selection, args.selection, config.dataset, config.folds)
    registration = RegistrationPredictor.from_record(guided_record["guidance"]["registration"],
                                                     cache_dir=args.registration_cache)
    try:
        candidates = [FailureThresholds.of(GuidanceConfig())] + [
            FailureThresholds(r, c) for r in args.ratios for c in args.correlations]
    except ConfigError as error:
        raise ConfigError(f"--ratios / --correlations: {error}") from None
    announce_new_folder(args.out)
    checks = registration_checks(dataset, registration, config, progress=not args.quiet)
    scored_with = {(f, c): FailureThresholds.of(classes_scored_with.get(f, {}).get(c, folds_scored_with[f]))
                   for f in config.folds for c in config.classes}
    rejected = untrusted(checks, scored_with)
    if rejected:
        raise ConfigError(f"the guided evaluation rejected {len(rejected)} registrations itself (e.g. fold "
                          f"{rejected[0][0]}, support {rejected[0][1]}, {rejected[0][2]}, query {rejected[0][3]}): "
                          "their guided scores are unknown, so thresholds that trust them cannot be scored")
    chosen = nested_failure_thresholds(guided, fallback, checks, candidates)
    for fold, choice in chosen["folds"].items():
        t = choice["config"]
        print(f"fold {fold}: ratio {t['max_volume_ratio']:g}, correlation {t['min_correlation']:g} "
              f"(other folds {choice['inner_mean_dice']:.2f}) -> Dice {choice['test_mean_dice']:.2f}")
    print(f"nested cross-validation Dice {chosen['nested_mean_dice']:.2f} (guided {guided.mean_dice:.2f}, "
          f"position rule {fallback.mean_dice:.2f})")
    rejecting = [row for row in chosen["table"] if row["rejected"]]
    if rejecting:
        row = max(rejecting, key=lambda r: r["mean_dice"])
        print(f"the best candidate that rejects any registration, ratio {row['config']['max_volume_ratio']:g}, "
              f"correlation {row['config']['min_correlation']:g}: {row['rejected']} of {len(checks)} rejected, "
              f"Dice {row['mean_dice']:.2f} over all folds")
    record = {**selection, "selection": with_thresholds(selection["selection"], chosen),
              "failure_threshold_inputs": {"guided": str(args.guided), "fallback": str(args.fallback),
                                     "selection": str(args.selection),
                                     "checks": [{"fold": k[0], "support_index": k[1], "class": k[2], "case_id": k[3],
                                                 **asdict(c), "volume_ratio": c.volume_ratio}
                                                for k, c in checks.items()]},
              "provenance": provenance()}
    out = Path(args.out) / "selection.json"
    write_text_atomic(json.dumps(record, indent=2) + "\n", out)
    print(f"wrote {out}")
    return 0


def cmd_evaluate(args) -> int:
    from medfss.semisup.checkpoint import is_semisup_checkpoint

    if args.checkpoint is not None and is_semisup_checkpoint(args.checkpoint):
        from medfss.semisup.cli import evaluate_semisup
        return evaluate_semisup(args)
    if args.list is not None or args.model is None:
        raise ConfigError("--model is required, and --list only applies to a semi-supervised --checkpoint")
    from medfss.data.io import write_text_atomic
    from medfss.evaluation.predictors import predictor_factory
    from medfss.evaluation.protocol import evaluate
    from medfss.provenance import provenance

    dataset, config = _protocol(args, args.extent)
    announce_new_folder(args.out)
    registration = _registration_predictor(args) if args.model == "registration" else None
    if args.guidance_selection is not None and args.guidance != "registration":
        raise ConfigError("--guidance-selection chooses the registration guidance: add --guidance registration")
    guide = _guide(args, config) if args.guidance == "registration" else None
    predictor_for = predictor_factory(args.model, args.checkpoint, spec=dataset.spec, device=args.device,
                                      registration=registration, guide=guide)
    draw = None
    if args.overlays is not None:
        from medfss.overlay import evaluation_drawer

        draw = evaluation_drawer(args.overlays)
    result = evaluate(dataset, predictor_for, config, model_name=args.model,
                      progress=not args.quiet, draw=draw)
    print(result.format_table())
    record = {"label": args.label or args.model, **result.to_json(), "provenance": provenance()}
    if registration is not None:
        record["registration"] = registration.record()
    if guide is not None:
        record["guidance"] = guide.record()
        if args.guidance_selection is not None:
            record["guidance"]["selection"] = str(args.guidance_selection)
    if args.checkpoint is not None:
        record["training"] = training_records(args.checkpoint, config.folds, dataset.spec, config.classes)
    out = Path(args.out)
    write_text_atomic(json.dumps(record, indent=2) + "\n", out / "results.json")
    print(f"wrote {out / 'results.json'}")
    return 0


def cmd_train(args) -> int:
    from medfss.checkpoints import auto_resume
    from medfss.config import load_config, read_yaml
    from medfss.semisup.config import is_semisup_yaml
    from medfss.training.loop import train

    overrides = list(args.set)
    if args.data_root is not None:
        overrides.append(f"data.data_root={args.data_root}")
    if is_semisup_yaml(read_yaml(args.config)):  # `task: semi-supervised` at the top of the YAML
        from medfss.semisup.cli import train_semisup
        return train_semisup(args.config, overrides, args.run_dir, resume=args.resume)
    config = load_config(args.config, overrides)
    resume = args.resume
    if resume == "auto":
        resume = auto_resume(args.run_dir)
        if resume is not None:
            print(f"resuming from {resume}")
    out = train(config, args.run_dir, resume=resume)
    print(f"wrote {out}")
    return 0


def cmd_benchmark(args) -> int:
    from medfss.config import load_config, read_yaml
    from medfss.data.io import write_text_atomic
    from medfss.evaluation.benchmark import BenchmarkConfig, benchmark, format_benchmark
    from medfss.provenance import provenance
    from medfss.semisup.config import is_semisup_yaml

    if all(is_semisup_yaml(read_yaml(path)) for path in args.config):
        from medfss.semisup.cli import benchmark_semisup_cli
        return benchmark_semisup_cli(args)
    settings = BenchmarkConfig(train_steps=args.steps, query_slices=args.query_slices, device=args.device)
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


def _spacing_arg(text: str) -> float | str:
    if text == "fit":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a spacing in mm or 'fit', got {text!r}") from None


def cmd_segment(args) -> int:
    from medfss.label_names import parse_names
    from medfss.scan_segmentation import describe, segment
    from medfss.semisup.checkpoint import is_semisup_checkpoint

    if not args.support_image and args.checkpoint is not None and is_semisup_checkpoint(args.checkpoint):
        from medfss.semisup.cli import segment_semisup
        return segment_semisup(args)
    if not args.support_image or args.label is None:
        raise ConfigError("--support-image, --support-mask and --label are required (only a semi-supervised "
                          "--checkpoint segments without supports)")
    if len(args.support_image) != len(args.support_mask):
        raise ConfigError(f"give one --support-mask per --support-image, got {len(args.support_image)} "
                          f"images and {len(args.support_mask)} masks")
    predictor = None
    if args.method == "registration":
        if args.checkpoint is not None:
            raise ConfigError("--method registration uses no network: leave out --checkpoint")
        predictor = _registration_predictor(args)
    guide = None
    guidance = resolve_guidance(args.guidance) if args.method == "few-shot" else None
    if guidance == "registration":
        from medfss.registration.ants import registration_notice

        guide = _guide(args)
        print(registration_notice(args.query, len(args.support_image), guide.registration.config))
    result = segment(args.query, list(zip(args.support_image, args.support_mask)), args.label,
                     checkpoint=args.checkpoint, predictor=predictor, guide=guide, axis=args.axis,
                     query_range=args.query_range, estimate_extent=guidance != "none",
                     orientation=args.orientation, modality=args.modality, largest_component=args.largest_component,
                     threshold=args.threshold, device=args.device, batch_size=args.batch_size,
                     label_names=parse_names(args.label_names) if args.label_names else None,
                     reference=args.reference, out=args.out, probabilities=args.probabilities,
                     overlay=args.overlay, summary=args.summary, report=args.report, progress=not args.quiet)
    print("\n".join(describe(result)))
    for r in result.per_label:
        notes = result.summary["classes"][str(r.label)].get("guidance", {})
        for failure in notes.get("failures", []):
            print(f"{r.title}: registration not trusted for a support: {failure}")
        if notes.get("fallback"):
            print(f"{r.title}: every registration failed; the network alone on the slices estimated from the "
                  "support's relative position")
    print(f"wrote {', '.join(result.summary['outputs'].values())}")
    return 0


def cmd_demo(args) -> int:
    from medfss.demo import run_demo

    run_demo(args.out, data_root=args.data_root, checkpoint=args.checkpoint, query_case=args.query_case,
             support_case=args.support_case, device=args.device, guidance=resolve_guidance(args.guidance),
             progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from medfss.registration.fusion import FEATURES

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
    ev.add_argument("--model", default=None,
                    help="a no-training baseline (copy-support, intensity-prototype, registration) or a trained "
                         "model name (not needed for a semi-supervised --checkpoint)")
    ev.add_argument("--checkpoint", default=None,
                    help="trained weights; '{fold}' in the path is replaced by the fold number")
    _add_protocol_args(ev)
    ev.add_argument("--extent", choices=("gt", "estimated"), default="gt",
                    help="query slices predicted: the class extent of the query's ground truth (gt, the "
                         "literature's protocol, raw prediction) or estimated from the support's relative "
                         "extent and post-processed as 'medfss segment' does: body mask, largest component "
                         "(estimated); the whole volume is scored either way")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--out", required=True, type=Path, help="folder for results.json")
    ev.add_argument("--label", default=None, help="row name in reports (default: the model name)")
    _add_registration_args(ev)
    _add_guidance_args(ev, default="position")
    ev.add_argument("--guidance-selection", type=Path, default=None, metavar="FILE",
                    help="the guidance from FILE (selection.json of 'medfss select-guidance'): on its data set "
                         "each test fold's choice (made on the other folds), on another data set its best-overall "
                         "choice; overrides --guidance-weight/-sigma-mm/-support-slices")
    ev.add_argument("--overlays", type=Path, default=None, metavar="DIR",
                    help="also draw every scored prediction with its ground truth under it, one PNG per "
                         "fold, support, class and query (DIR/fold0_support1_liver_query2.png)")
    ev.add_argument("--list", default=None,
                    help="semi-supervised models: the list file of volumes to score (a path, or a name in the "
                         "data set folder, e.g. val.list); reads data/{name}.h5 per name")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_evaluate)

    sel = sub.add_parser("select-guidance", help="choose the registration guidance's fusion per test fold on "
                                                 "the other folds (nested cross-validation, no query label)")
    sel.add_argument("--model", required=True, help="the few-shot model the guidance wraps")
    sel.add_argument("--checkpoint", required=True,
                     help="trained weights; '{fold}' in the path is replaced by the fold number")
    _add_protocol_args(sel)
    sel.add_argument("--weights", type=_float_list, default=[0.0, 0.25, 0.5, 0.75, 1.0], metavar="W1,W2,...",
                     help="average: network weights w to try (default 0,0.25,0.5,0.75,1)")
    sel.add_argument("--sigmas-mm", type=_float_list, default=[0.0, 2.5, 5.0, 10.0], metavar="S1,S2,...",
                     help="average: in-plane softenings of the registered prior to try, in mm (default 0,2.5,5,10)")
    sel.add_argument("--fusion", choices=("learned", "average"), default="learned",
                     help="learned: fit the logistic fusion of medfss.registration.fusion on the other folds; "
                          "average: choose w, sigma and the support slices on the other folds (default learned)")
    sel.add_argument("--fusion-features", type=lambda v: v.split(","), default=list(FEATURES), metavar="NAME,...",
                     help="learned: the features eq. 1 uses, the others left out (an ablation; default all: "
                          + ", ".join(FEATURES) + ")")
    sel.add_argument("--per-class", action="store_true",
                     help="learned: also fit each class its own coefficients, kept where they predict the class's "
                          "voxels of held-out folds better than the shared ones (cross-validated on the same folds)")
    sel.add_argument("--class-thresholds", type=_float_list, default=None, metavar="T1,T2,...",
                     help="learned: each class takes the probability threshold of these whose cross-validated "
                          "Dice on the same folds is best (folded into its intercept), e.g. 0.2,0.3,0.4,0.5,0.6")
    sel.add_argument("--samples-per-query", type=int, default=20000, metavar="N",
                     help="learned: training voxels drawn from each query and class (default 20000)")
    sel.add_argument("--support-slices", type=lambda v: v.split(","), default=["chunks", "registered"],
                     metavar="RULE,...", help="average: support-slice rules to try (default chunks,registered)")
    sel.add_argument("--device", default="cpu")
    sel.add_argument("--out", required=True, type=Path, help="folder for selection.json")
    sel.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_registration_args(sel)
    sel.set_defaults(func=cmd_select_guidance, guidance_weight=None, guidance_sigma_mm=None,
                     guidance_support_slices=None)

    ft = sub.add_parser("select-failure-thresholds",
                        help="choose the registration guidance's failure thresholds per test fold on the other folds, "
                             "from a guided and a position-rule evaluation (one shot, no query label)")
    ft.add_argument("--guided", required=True, type=Path, metavar="RESULTS",
                    help="results.json of 'medfss evaluate --guidance registration --guidance-selection "
                         "SELECTION --extent estimated'")
    ft.add_argument("--fallback", required=True, type=Path, metavar="RESULTS",
                    help="results.json of the same model, folds and supports with --guidance position")
    ft.add_argument("--selection", required=True, type=Path,
                    help="the guided evaluation's selection.json ('medfss select-guidance'); written again with "
                         "each fold's thresholds")
    ft.add_argument("--ratios", type=_float_list, default=[1.25, 1.5, 2.0, 3.0, 5.0, 100.0], metavar="R1,R2,...",
                    help="warped over support volume allowed within [1/r, r] (default 1.25,1.5,2,3,5,100)")
    ft.add_argument("--correlations", type=_float_list, default=[0.0, 0.2, 0.4, 0.5, 0.6, 0.7],
                    metavar="C1,C2,...", help="least correlation of the warped image with the query "
                                              "(default 0,0.2,0.4,0.5,0.6,0.7)")
    _add_data_args(ft)
    ft.add_argument("--registration-cache", type=Path, default=None, metavar="DIR",
                    help="the registrations of the guided evaluation (registered again without it)")
    ft.add_argument("--out", required=True, type=Path, help="folder for selection.json")
    ft.add_argument("--quiet", action="store_true", help="no progress bar")
    ft.set_defaults(func=cmd_select_failure_thresholds)

    tr = sub.add_parser("train", help="train an episodic model (self-supervised or supervised), or a "
                                      "semi-supervised one (a YAML with 'task: semi-supervised')")
    tr.add_argument("--config", required=True, type=Path,
                    help="a preset YAML, e.g. configs/alpnet_cpu.yaml (what it leaves out keeps the defaults)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set data.fold=1 --set optim.iterations=500")
    tr.add_argument("--run-dir", required=True, type=Path,
                    help="folder for config.yaml, checkpoints, logs and the exported model.pt")
    tr.add_argument("--resume", default=None,
                    help="a training checkpoint to continue exactly where it stopped, or 'auto' for "
                         "RUN_DIR/checkpoints/last.ckpt when it exists (previous.ckpt when last.ckpt is "
                         "unreadable); SIGINT / SIGTERM save a checkpoint to resume from")
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
                    "slices are estimated from its relative position in the support scans, no label is "
                    "predicted outside the body (an intensity mask of the patient), and only its "
                    "largest 3D connected component is kept unless --no-largest-component. Constant (e.g. "
                    "all-zero) scans are refused; implausible volumes (outside 1/3 to 3 times the support's) "
                    "and modality mismatches are warned about.")
    seg.add_argument("--query", required=True, type=Path, help="the scan to segment (3D NIfTI)")
    seg.add_argument("--support-image", action="append", type=Path, default=[],
                     help="a labelled scan; repeat for several supports (k-shot); none for a semi-supervised "
                          "--checkpoint, which segments its fixed classes")
    seg.add_argument("--support-mask", action="append", type=Path, default=[],
                     help="the label map of the preceding --support-image (some slices may be unlabelled)")
    seg.add_argument("--label", type=_int_list, default=None,
                     help="label value(s) of the support masks to segment, comma-separated, e.g. 1,2")
    seg.add_argument("--out", required=True, type=Path, help="the label NIfTI to write (.nii.gz)")
    seg.add_argument("--checkpoint", type=Path, default=None,
                     help="a trained model (model.pt); default: the bundled model (CHAOST2 abdominal MRI, "
                          "see its card src/medfss/weights/alpnet_chaost2.md)")
    seg.add_argument("--label-names", default=None, metavar="NAME,NAME,...",
                     help="one name per --label for the overlay, printout and summary (default: from a "
                          "dataset.json or dataset_card.json beside the support mask, else 'label N')")
    seg.add_argument("--reference", type=Path, default=None,
                     help="the query's ground-truth labels when known: drawn under the prediction in the "
                          "overlay, never used to predict")
    seg.add_argument("--report", type=Path, default=None,
                     help="also write a one-file HTML report (overlay, per-label volumes, warnings)")
    seg.add_argument("--probabilities", type=Path, default=None,
                     help="also write the float32 foreground probabilities (one volume per label: 4D if several)")
    seg.add_argument("--overlay", type=Path, default=None,
                     help="also write a PNG montage with named contours (radiological view)")
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
                          "the modality medfss prepare recorded (dataset_card.json beside the scan), else CT "
                          "when the minimum is below -500 (HU), else MR. A warning is printed when it "
                          "differs from the model's")
    seg.add_argument("--largest-component", action=argparse.BooleanOptionalAction, default=True,
                     help="keep only the largest 3D connected component of each label (default: on)")
    seg.add_argument("--threshold", type=float, default=0.5, help="foreground probability threshold")
    seg.add_argument("--device", default="auto", help="auto (a GPU when present), cpu or cuda")
    seg.add_argument("--batch-size", type=int, default=8, help="query slices per model call")
    seg.add_argument("--method", choices=("few-shot", "registration"), default="few-shot",
                     help="few-shot: the network of --checkpoint; registration: atlas registration of every "
                          "support onto the query with ANTsPy, labels fused by majority voting (no network)")
    _add_registration_args(seg)
    _add_guidance_args(seg, default="auto")
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
    demo.add_argument("--guidance", choices=("auto", "position", "registration"), default="auto",
                      help="registration: the network guided by ANTsPy registration of the support onto the "
                           "query (the default when ANTsPy is installed); position: the support's relative "
                           "position alone")
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

    from medfss.data.intensity import MODALITIES, MR_TOP_PERCENT
    from medfss.data.prepare.sources import SOURCES

    sources = "; ".join(f"{s.name}: {s.expects}" for s in SOURCES.values())
    pr = sub.add_parser(
        "prepare", help="convert a raw public release into the normalised format (image_{id}/label_{id})",
        description="Convert a raw release into image_{id}.nii.gz (float32, SIZE x SIZE in-plane, intensities "
                    "normalised as in the SSL-ALPNet preprocessing) and label_{id}.nii.gz (raw label values), "
                    f"plus dataset_card.json and README.md. Inputs: {sources}.")
    pr.add_argument("--source", required=True, help=f"one of {', '.join(SOURCES)}")
    pr.add_argument("--input", required=True, type=Path, help="the raw release's folder (read only)")
    pr.add_argument("--out", required=True, type=Path, help="output folder, outside the input folder")
    pr.add_argument("--size", type=int, default=256, help="in-plane size after crop/pad (default 256)")
    pr.add_argument("--spacing", type=_spacing_arg, default=None,
                    help="in-plane spacing in mm, or 'fit' (the central 7/8 of the field of view fills "
                         "SIZE); default 1.25, fit for synapse")
    pr.add_argument("--slice-spacing", type=float, default=None,
                    help="resample the slices to this spacing in mm (default: keep; the reference "
                         "CHAOST2 files use 7.7)")
    pr.add_argument("--modality", choices=MODALITIES, default=None,
                    help="nifti source only: intensity normalisation (auto: CT when the minimum is below -500)")
    pr.add_argument("--mr-top-percent", type=float, default=MR_TOP_PERCENT,
                    help="MR: share of the histogram cut at the bright end (default 0.5; 0: none)")
    pr.add_argument("--image-glob", default=None, help="nifti source: images, relative to --input, e.g. "
                                                       "'images/*.nii.gz'")
    pr.add_argument("--label-glob", default=None, help="nifti source: labels, matched to the images by "
                                                       "what the wildcards capture, e.g. 'labels/*_seg.nii.gz'")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MedfssError as exc:
        print(f"medfss: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("medfss: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
