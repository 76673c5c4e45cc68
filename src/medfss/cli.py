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
from medfss.errors import MedfssError


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
    )
    predictor_for_fold = predictor_factory(args.model, args.checkpoint, device=args.device)
    result = evaluate(dataset, predictor_for_fold, config, model_name=args.model,
                      progress=not args.quiet)
    print(result.format_table())
    record = {"label": args.label or args.model, **result.to_json(), "provenance": provenance()}
    out = Path(args.out)
    write_text_atomic(json.dumps(record, indent=2) + "\n", out / "results.json")
    print(f"wrote {out / 'results.json'}")
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
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--out", required=True, type=Path, help="folder for results.json")
    ev.add_argument("--label", default=None, help="row name in reports (default: the model name)")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.set_defaults(func=cmd_evaluate)

    report = sub.add_parser("report", help="markdown tables of every results.json under a folder")
    report.add_argument("root", type=Path, help="folder searched for results.json files (e.g. results)")
    report.add_argument("--out", type=Path, default=None, help="write here instead of printing")
    report.set_defaults(func=cmd_report)
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
