"""Hostile inputs through the readers, ``segment`` and ``prepare``: one-line errors or correct results.

:func:`run_input` feeds one :class:`~medfss.reliability.hostile.HostileInput`
to its *target*:

* ``nifti``: :func:`medfss.data.io.read_nifti`;
* ``segment``: :func:`medfss.segment` with the intensity-prototype
  baseline, the hostile file being the query, the support scan or its mask;
* ``prepare``: :func:`medfss.data.prepare.prepare` on an image/label pair;
* ``dicom``: :func:`medfss.data.prepare.read_dicom_series` on a 4-slice series;
* ``checkpoint``: :func:`medfss.checkpoints.load_model` on a tiny model file;
* ``hdf5``: :func:`medfss.semisup.data.read_list` on a list file, then
  :func:`~medfss.semisup.data.load_slices` (ACDC's training slices) or
  :func:`~medfss.semisup.data.load_volumes` (ACDC, LA) on the cases it names.

and sorts the outcome: ``ok`` (a result, checked), ``refused`` (a
:class:`~medfss.errors.MedfssError` with a one-line message), or a failure:
``crash`` (any other exception, or a multi-line message), ``hang`` (over the
time limit), ``unbounded`` (a ``MemoryError`` under the address-space limit
:func:`fuzz_in_child` sets), ``input-modified`` (an input's SHA-256
changed), ``partial-output`` (a refused call left an output or a temporary
file behind), ``payload-ran`` (a checkpoint's pickle payload executed).

:func:`cli_outcome` runs a hostile input through the ``medfss`` command in a
subprocess instead: exit status 2, one stderr line, no traceback (HDF5
volumes through ``medfss evaluate`` with a tiny semi-supervised model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from medfss.reliability import child_env
from medfss.reliability.hostile import PAYLOAD_MARKER, HostileInput, hostile_inputs, nifti_bytes, phantom

FAILURES = ("crash", "hang", "unbounded", "input-modified", "partial-output", "payload-ran")
MEMORY_LIMIT = 3 * 2**30  # bytes of address space for a fuzzing process: far above what any input needs
TIMEOUT_S = 20.0  # per input


@dataclass(frozen=True)
class Outcome:
    target: str
    kind: str
    detail: str
    status: str  # ok, refused, or one of FAILURES
    message: str  # the error's message, or what was wrong with the result

    @property
    def failed(self) -> bool:
        return self.status in FAILURES


# --- running one input ---------------------------------------------------------------------------


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _call(case: HostileInput, folder: Path) -> str:
    """Run ``case`` on its files in ``folder``; returns a note on the result (raises on refusal)."""
    if case.target == "nifti":
        from medfss.data.io import read_nifti

        (name,) = case.files
        img = read_nifti(folder / name)
        return _check_volume(img.array)
    if case.target == "segment":
        from medfss.evaluation.baselines import build_baseline
        from medfss.scan_segmentation import segment

        files = {Path(name).name.split(".")[0]: folder / name for name in case.files}
        result = segment(files["query"], [(files["support"], files["mask"])], [1],
                         predictor=build_baseline("intensity-prototype"), out=folder / "out" / "pred.nii.gz",
                         progress=False)
        return _check_segmentation(result, files["query"], folder / "out" / "pred.nii.gz")
    if case.target == "prepare":
        from medfss.data.prepare import prepare

        card = prepare("nifti", folder / "in", folder / "out", size=32, image_glob="img/*",
                       label_glob="lab/*", progress=False)
        return "" if card["n_volumes"] == 1 else f"{card['n_volumes']} volumes"
    if case.target == "dicom":
        from medfss.data.prepare.dicom import read_dicom_series

        series = read_dicom_series(folder / "series")
        return _check_volume(series.array) or ("" if np.isfinite(series.affine).all() else "non-finite affine")
    if case.target == "hdf5":
        from medfss.semisup.data import LAYOUTS, load_slices, load_volumes, read_list

        list_file = folder / _list_file(case)
        layout = LAYOUTS[list_file.parent.name]
        names = read_list(list_file)
        if list_file.name == "train_slices.list":
            images, labels = load_slices(layout, list_file.parent, names, (16, 16))
            return _check_labelled(images[:, 0].numpy(), labels.numpy(), layout.num_classes)
        notes = [_check_labelled(image, label, layout.num_classes)
                 for image, label in load_volumes(layout, list_file.parent, names)]
        return next(filter(None, notes), "")
    from medfss.checkpoints import load_model
    from medfss.reliability.toy import build_tiny

    model, _ = load_model(folder / "model.pt", build=build_tiny)
    return "" if all(v.dtype.is_floating_point for v in model.state_dict().values()) else "non-float weights"


def _list_file(case: HostileInput) -> str:
    (name,) = [name for name in case.files if name.endswith(".list")]
    return name


def _check_volume(array: np.ndarray) -> str:
    if array.ndim != 3 or 0 in array.shape:
        return f"returned shape {array.shape}"
    return "" if np.isfinite(array).all() else "returned non-finite voxels"


def _check_labelled(image: np.ndarray, label: np.ndarray, num_classes: int) -> str:
    """An HDF5 reader's result: a finite float32 image [S, H, W] or [*S] and int64 classes of its shape."""
    if image.ndim != 3 or image.shape != label.shape or 0 in image.shape:
        return f"returned image {image.shape} and label {label.shape}"
    if image.dtype != np.float32 or not np.isfinite(image).all():
        return f"returned a {image.dtype} image with non-finite voxels"
    if label.dtype != np.int64 or label.min() < 0 or label.max() >= num_classes:
        return f"returned {label.dtype} labels {label.min()}..{label.max()} off the classes 0..{num_classes - 1}"
    return ""


def _check_segmentation(result, query: Path, out: Path) -> str:
    import nibabel as nib

    written = nib.load(out)
    if written.shape != nib.load(query).shape or written.get_data_dtype() != np.uint8:
        return f"output shape {written.shape} / dtype {written.get_data_dtype()} differ from the query's"
    values = set(np.unique(np.asarray(written.dataobj)).tolist())
    return "" if values <= {0, 1} else f"output holds labels {sorted(values)}"


def run_input(case: HostileInput, folder: Path, timeout_s: float = TIMEOUT_S) -> Outcome:
    """Write ``case`` into the empty ``folder``, run it, and sort the outcome (see the module docstring)."""
    from medfss.errors import MedfssError

    for name, data in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    inputs = {folder / name: _sha256(folder / name) for name in case.files}
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        note = _call(case, folder)
        status, message = ("ok", "") if not note else ("crash", f"wrong result: {note}")
    except MedfssError as exc:
        message = str(exc)
        status = "refused" if message and "\n" not in message else "crash"
    except _Timeout:
        status, message = "hang", f"no answer within {timeout_s:g} s"
    except MemoryError as exc:
        status, message = "unbounded", f"MemoryError {exc}"
    except Exception as exc:  # noqa: BLE001 - what the fuzzer is looking for
        status, message = "crash", f"{type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    changed = [p.name for p, digest in inputs.items() if not p.is_file() or _sha256(p) != digest]
    if changed:
        status, message = "input-modified", f"{changed} changed; {message}"
    elif (folder / PAYLOAD_MARKER).exists() or Path(PAYLOAD_MARKER).exists():
        status, message = "payload-ran", message
    elif status != "ok" and (folder / "out").is_dir() and any(
            p.name.startswith(".tmp-") or p.suffix in (".gz", ".nii") for p in (folder / "out").rglob("*")):
        status, message = "partial-output", f"{sorted(p.name for p in (folder / 'out').rglob('*'))}; {message}"
    return Outcome(case.target, case.kind, case.detail, status, message[:300])


def fuzz(count: int, seed: int, workdir: Path, start: int = 0,
         report: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run inputs ``start .. start+count-1`` in this process, each in a fresh folder under ``workdir``."""
    outcomes = []
    for index, case in enumerate(hostile_inputs(count, seed, start), start):
        folder = workdir / f"input-{index}"
        folder.mkdir(parents=True)
        outcome = run_input(case, folder)
        shutil.rmtree(folder, ignore_errors=True)
        outcomes.append(outcome)
        if report is not None:
            report(outcome)
    return outcomes


def _limit_memory(limit: int = MEMORY_LIMIT) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def fuzz_in_child(count: int, seed: int, workdir: Path) -> list[Outcome]:
    """:func:`fuzz` in child processes under :data:`MEMORY_LIMIT`; an input that kills its child is a crash.

    The child reports each outcome as a JSON line as it goes; after a child
    dies the next one starts at the input after the one that killed it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    while len(outcomes) < count:
        start = len(outcomes)
        log = workdir / f"outcomes-{start}.jsonl"
        cmd = [sys.executable, "-m", "medfss.reliability.fuzz", "--count", str(count - start), "--seed", str(seed),
               "--start", str(start), "--workdir", str(workdir / f"run-{start}"), "--log", str(log)]
        done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, preexec_fn=_limit_memory,
                              timeout=count * TIMEOUT_S + 120)
        if log.is_file():
            outcomes += [Outcome(**json.loads(line)) for line in log.read_text().splitlines() if line.strip()]
        if done.returncode != 0 and len(outcomes) < count:
            (case,) = hostile_inputs(1, seed, len(outcomes))
            stderr = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            outcomes.append(Outcome(case.target, case.kind, case.detail, "crash", f"process died: {stderr}"[:300]))
    return outcomes


# --- through the command line --------------------------------------------------------------------


def cli_command(case: HostileInput, folder: Path) -> list[str]:
    """The ``medfss`` command line that reads ``case``'s files (segment, prepare, the checkpoint, HDF5 volumes)."""
    base = [sys.executable, "-m", "medfss.cli"]
    if case.target == "hdf5" and _cli_readable(case):  # with an untrained model of the data set
        from medfss.reliability.toy import tiny_semisup_model

        list_file = Path(_list_file(case))
        model = tiny_semisup_model(list_file.parent.name, folder / "semisup.pt")
        return [*base, "evaluate", "--checkpoint", str(model), "--dataset", list_file.parent.name, "--data-root",
                str(folder), "--list", list_file.name, "--out", str(folder / "out"), "--device", "cpu", "--quiet"]
    if case.target in ("segment", "checkpoint"):
        files = {Path(name).name.split(".")[0]: folder / name for name in case.files}
        query, support, mask = (files.get(k) for k in ("query", "support", "mask"))
        if case.target == "checkpoint":  # a hostile model: valid scans
            image, label = phantom(np.random.default_rng(0))
            query = support = folder / "scan.nii.gz"
            mask = folder / "scan_mask.nii.gz"
            query.write_bytes(nifti_bytes(image))
            mask.write_bytes(nifti_bytes(label))
        checkpoint = files.get("model")
        return [*base, "segment", "--query", str(query), "--support-image", str(support), "--support-mask",
                str(mask), "--label", "1", "--out", str(folder / "out" / "pred.nii.gz"), "--quiet", "--device",
                "cpu", "--guidance", "position", *(["--checkpoint", str(checkpoint)] if checkpoint else [])]
    if case.target == "prepare":
        return [*base, "prepare", "--source", "nifti", "--input", str(folder / "in"), "--out", str(folder / "out"),
                "--size", "32", "--image-glob", "img/*", "--label-glob", "lab/*", "--quiet"]
    raise ValueError(f"no command line reads {case.target!r} inputs on their own")


def cli_outcome(case: HostileInput, folder: Path, timeout_s: float = 120.0) -> Outcome:
    """Run ``case`` through the command line: ``ok`` (exit 0) or ``refused`` (exit 2, one line, no traceback)."""
    for name, data in case.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    inputs = {folder / name: _sha256(folder / name) for name in case.files}
    try:
        done = subprocess.run(cli_command(case, folder), env=child_env(), capture_output=True, text=True,
                              preexec_fn=_limit_memory, timeout=timeout_s, cwd=folder)
    except subprocess.TimeoutExpired:
        return Outcome(case.target, case.kind, case.detail, "hang", f"no exit within {timeout_s:g} s")
    errors = [line for line in done.stderr.splitlines() if line.startswith("medfss: error:")]
    if done.returncode == 0:
        status, message = "ok", ""
    elif done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr:
        status, message = "refused", errors[0]
    elif "MemoryError" in done.stderr:
        status, message = "unbounded", done.stderr.strip().splitlines()[-1]
    else:
        status, message = "crash", f"exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}"
    if any(_sha256(p) != digest for p, digest in inputs.items()):
        status = "input-modified"
    elif (folder / PAYLOAD_MARKER).exists():
        status = "payload-ran"
    elif status != "ok" and any(p.name.startswith(".tmp-") for p in folder.rglob("*")):
        status = "partial-output"
    return Outcome(case.target, case.kind, case.detail, status, message[:300])


def _cli_readable(case: HostileInput) -> bool:
    """Whether a command reads ``case`` on its own: ACDC's training slices are read by training only."""
    if case.target == "hdf5":
        return not _list_file(case).endswith("train_slices.list")
    return case.target in ("segment", "prepare", "checkpoint")


def cli_inputs(count: int, seed: int) -> list[HostileInput]:
    """``count`` inputs of the CLI-readable targets (segment, prepare, checkpoint, HDF5 volumes), in turn."""
    chosen, index = [], 0
    while len(chosen) < count:
        case = next(hostile_inputs(1, seed, index))
        if _cli_readable(case):
            chosen.append(case)
        index += 1
    return chosen


# --- summaries -----------------------------------------------------------------------------------


def outcome_table(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    """``{target/kind: {status: count}}``, sorted."""
    table: dict[str, Counter] = {}
    for o in outcomes:
        table.setdefault(f"{o.target}/{o.kind}", Counter())[o.status] += 1
    return {key: dict(sorted(counts.items())) for key, counts in sorted(table.items())}


def format_table(table: dict[str, dict[str, int]]) -> str:
    """A markdown table: one row per target/kind, one column per status."""
    statuses = [s for s in ("ok", "refused", *FAILURES) if any(s in row for row in table.values())]
    lines = ["| input | " + " | ".join(statuses) + " |", "|---|" + "---:|" * len(statuses)]
    lines += [f"| {key} | " + " | ".join(str(row.get(s, 0)) for s in statuses) + " |" for key, row in table.items()]
    return "\n".join(lines)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run hostile inputs in this process, one JSON line each")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.WARNING)  # expected warnings (e.g. nibabel's on odd headers) would flood stderr
    os.chdir(args.workdir.parent if args.workdir.parent.is_dir() else ".")
    with args.log.open("a") as log:
        def report(outcome: Outcome) -> None:
            log.write(json.dumps(asdict(outcome)) + "\n")
            log.flush()
        fuzz(args.count, args.seed, args.workdir, args.start, report)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
