"""Segment a new scan from a few labelled ones: ``medfss.segment`` and ``medfss segment``.

    result = medfss.segment("query.nii.gz", supports=[("s.nii.gz", "s_mask.nii.gz")], labels=[1, 2],
                            checkpoint="run/model.pt", out="pred.nii.gz")

What happens, for each requested label (all labels use the same supports):

1. Every scan is read with its geometry and turned to the voxel order the
   model was trained in (recorded in its checkpoint, e.g. LAS for CHAOST2;
   RAS+ if it records none; called "canonical" below) by permutations and
   flips only (:mod:`medfss.data.preprocess`); intensities are normalised as in
   training (MR: z-score per volume; CT: clipped to [-125, 275] HU, then
   z-scored). The modality is decided per scan by :mod:`medfss.modality`
   (given, ``medfss prepare``'s card, or Hounsfield units), and a scan whose
   modality differs from the model's is warned about. A constant scan (all
   zero, say) is refused (:func:`medfss.inference.check_informative`).
2. Slices are cut along one axis of the query (``axis``, a voxel axis of the
   query file; default the through-plane axis, the one with the largest
   spacing); the supports are cut along the same anatomical direction.
   In-plane, the predictor resizes slices to the size its model was trained at.
3. The query needs no label: the support slices are the slices of the
   support mask that hold the label (sparse labelling is fine); the organ's
   relative extent in the support scan is mapped onto the query range
   (:func:`medfss.inference.estimate_query_extent`), both are split into C = 3
   chunks, and each query slice of chunk i is segmented with the middle
   labelled support slice of chunk i of every support
   (:func:`medfss.inference.chunk_plan`). Query slices outside the estimated
   extent are background. Steps 3 and 4 are :mod:`medfss.inference`, the
   path ``medfss evaluate --extent estimated`` scores.
4. The label's foreground is ``probability > threshold`` inside the query's
   body mask (:mod:`medfss.inference.body`: no label outside the patient);
   by default only its largest 3D connected component (26-connectivity) is
   kept, which removes scattered false positives.
5. With several labels, a voxel claimed by more than one goes to the label
   with the highest probability; the output is one multi-label map holding
   the label values given (0 = background).
6. The result is put back on the query's grid: the label NIfTI has the
   query's shape, affine and header, with dtype uint8 (and cal_min/cal_max
   set to the label range so that viewers show it).
7. Each label's volume is compared with the supports' (:mod:`medfss.plausibility`);
   implausible ones, and modality mismatches, are listed in ``summary["warnings"]``.
   The overlay (:mod:`medfss.overlay`) names the labels (:mod:`medfss.label_names`),
   shows a known ground truth (``reference``, read for the drawing only) and
   is drawn in the radiological convention whatever the model's voxel order.

Memory: the query volume, the uint8 label volume, the float32 probabilities
of the current label's extent (and, with several labels, a float32 volume of
the best probability so far), and one batch of ``batch_size`` query slices in
the model: never the model's output for the whole scan. The
``probabilities`` output holds one float32 volume per label.

Outputs are computed in full before any is written, each through a temporary
file and a rename; an output path equal to an input is an error before any
work, and inputs are never modified. Output folders that do not exist are
created and listed in ``summary["created_folders"]``. Heavy modules (torch, nibabel, the
models) are imported inside the functions, so ``import medfss`` stays light.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfss import __version__
from medfss.errors import ConfigError, InputFileError, LabelMapError
from medfss.label_names import label_names as find_label_names
from medfss.modality import ModalityDecision, decide_modality, model_modality, modality_warning
from medfss.plausibility import volume_warning

if TYPE_CHECKING:
    from medfss.data.io import NiftiArray
    from medfss.data.preprocess import Reorientation
    from medfss.inference import Predictor, SupportScan, VolumePredictor

PathLike = str | os.PathLike
SliceRange = tuple[int | None, int | None]  # half-open (start, stop) along the query file's slicing axis;
# None: from the first / to the last slice
NIFTI_SUFFIXES = (".nii", ".nii.gz")
GRID_TOLERANCE_MM = 1e-2  # a support mask's affine may differ from its scan's by rounding only


def default_checkpoint() -> Path:
    """The bundled model used when no checkpoint is given (:mod:`medfss.weights`)."""
    from medfss.weights import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        raise ConfigError(f"the bundled model {DEFAULT_MODEL} is missing from this installation; pass "
                          "--checkpoint (a model.pt exported by 'medfss train') or run scripts/default_model.sh")
    return DEFAULT_MODEL


@dataclass(frozen=True)
class LabelResult:
    """What was done for one label: slices used, extent predicted and the volume found."""

    label: int
    name: str
    extent: SliceRange  # half-open, query file voxel indices along the slicing axis
    chunks: tuple[SliceRange, ...]  # the query slices (file indices, half-open) of each chunk
    support_slices: tuple[tuple[int, ...], ...]  # per support: the slice of each chunk (its file's indices)
    voxels: int
    millilitres: float
    support_millilitres: tuple[float, ...]  # the label's volume in each support mask

    @property
    def title(self) -> str:
        """``label 6 (liver)``, or ``label 6`` when the label has no name."""
        return f"label {self.label}" if self.name == f"label {self.label}" else f"label {self.label} ({self.name})"


@dataclass(frozen=True)
class Segmentation:
    """The prediction on the query's grid, and what produced it."""

    labels: np.ndarray  # [X, Y, Z] uint8, the query file's voxel order
    affine: np.ndarray  # [4, 4], the query's
    probabilities: np.ndarray | None  # [X, Y, Z] (one label) or [X, Y, Z, N] float32; None unless asked
    per_label: tuple[LabelResult, ...]
    summary: dict[str, Any] = field(repr=False)  # the JSON summary


def segment(query: PathLike, supports: Sequence[tuple[PathLike, PathLike]], labels: Sequence[int] = (1,), *,
            checkpoint: PathLike | None = None, predictor: Predictor | VolumePredictor | None = None,
            axis: int | None = None, query_range: SliceRange | None = None, orientation: str | None = None,
            extent: SliceRange | Mapping[int, SliceRange] | None = None, estimate_extent: bool = True,
            modality: str = "auto", largest_component: bool = True, threshold: float = 0.5,
            chunks: int = 3, device: str = "auto", batch_size: int = 8,
            label_names: Sequence[str] | None = None, reference: PathLike | None = None,
            out: PathLike | None = None, probabilities: PathLike | None = None,
            overlay: PathLike | None = None, summary: PathLike | None = None, report: PathLike | None = None,
            guide: Callable[[Predictor], VolumePredictor] | None = None, progress: bool = True) -> Segmentation:
    """Segment ``labels`` in the ``query`` scan from labelled ``supports`` (see the module docstring).

    query: a 3D NIfTI file. supports: ``(image, mask)`` NIfTI file pairs; each
    mask must hold every label of ``labels`` (values 1..255).
    checkpoint: an exported model or training checkpoint (default:
    :func:`default_checkpoint`); or pass ``predictor``, any
    :class:`~medfss.inference.Predictor` or
    :class:`~medfss.inference.VolumePredictor` (e.g. atlas registration,
    :class:`medfss.registration.predictor.RegistrationPredictor`), instead.
    axis: the query file's voxel axis to slice along (default: largest spacing).
    orientation: the voxel order the model works in, as axis codes (e.g.
    "LAS"); default: the one recorded in the checkpoint, else RAS.
    query_range: half-open ``(start, stop)`` slice indices along that axis
    that the support scans cover (default: the whole query).
    extent: the slices to predict, ``(start, stop)`` for every label or a
    ``{label: (start, stop)}`` map (default: estimated from the supports;
    with ``estimate_extent=False``, every slice of ``query_range``).
    modality: ``auto``, ``MR`` or ``CT`` (intensity normalisation; ``auto``:
    :func:`medfss.modality.decide_modality`).
    label_names: one name per label (default: :func:`medfss.label_names.label_names`
    from the first support mask's folder). reference: a label file on the
    query's grid (its ground truth, when known), drawn in the overlay only.
    guide: wraps the network's predictor, e.g. a
    :class:`medfss.registration.guided.Guide` (registration-guided
    segmentation; each label's ``guidance`` in the summary says what it used).
    out, probabilities, overlay, summary, report: where to write the label
    NIfTI, the float32 probability NIfTI, the PNG montage, the JSON summary
    and the HTML report (each optional; nothing is written without them).
    Raises :class:`~medfss.errors.MedfssError` subclasses for bad input.
    """
    start_time = time.perf_counter()
    labels = _check_labels(labels)
    pairs = _check_supports(supports)
    if predictor is not None and checkpoint is not None:
        raise ValueError("give either checkpoint or predictor, not both")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    if chunks < 1:
        raise ConfigError(f"chunks must be at least 1 (3 is the standard), got {chunks}")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold is a probability in (0, 1) (0.5 is the argmax), got {threshold}")
    if axis is not None and axis not in (0, 1, 2):
        raise ConfigError(f"axis must be 0, 1 or 2 (a voxel axis of the query), got {axis}")
    from medfss.data.intensity import MODALITIES
    if modality not in MODALITIES:
        raise ConfigError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    outputs = {"out": out, "probabilities": probabilities, "overlay": overlay, "summary": summary,
               "report": report}
    inputs = [query, *(p for pair in pairs for p in pair), *([reference] if reference is not None else [])]
    if predictor is None:
        checkpoint = default_checkpoint() if checkpoint is None else checkpoint
        inputs.append(checkpoint)
    _check_output_paths(inputs, outputs)
    names = find_label_names(labels, label_names, pairs[0][1])

    if predictor is None:
        from medfss.checkpoints import load_predictor

        predictor, model_info = load_predictor(checkpoint, device=device, batch_size=batch_size)
    else:
        model_info = {"predictor": type(predictor).__name__}
        if hasattr(predictor, "config"):
            model_info["config"] = asdict(predictor.config)
    if guide is not None:
        predictor = guide(predictor)
        model_info["guidance"] = guide.record()
    from medfss.data.preprocess import DEFAULT_ORIENTATION, check_axcodes
    orientation = orientation or model_info.get("slice_orientation") or DEFAULT_ORIENTATION
    try:
        check_axcodes(orientation)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    from medfss.inference import VolumePredictor, body_mask, check_informative

    query_img = _read(query)
    check_informative(query_img.array, str(query))
    query_modality = decide_modality(query_img.array, modality, query)
    volume = _QueryVolume.build(query_img, axis, query_modality.modality, orientation)
    geometry = {"affine": query_img.affine, "header": query_img.header, "shape": query_img.array.shape,
                "spacing": query_img.spacing}
    del query_img  # the normalised copy in ``volume`` is all that is needed from here
    query_range = volume.canonical_range(query_range)
    extents = _extent_map(extent, labels)
    support_data = [_read_support(image, mask, labels, modality, orientation)
                    for image, mask in pairs]  # all checked before any prediction
    whole_volume = isinstance(predictor, VolumePredictor)
    plans = [_plan_label(label, support_data, volume, query_range, extents.get(label), chunks, whole_volume,
                         estimate_extent) for label in labels]
    support_modalities = [s.modality for s in support_data]
    support_ml = {label: tuple(s.millilitres(label) for s in support_data) for label in labels}
    del support_data  # the plans hold what is needed of them
    truth = _read_reference(reference, geometry["shape"]) if reference is not None else None

    label_volume, kept, predicted, guidance = _predict_labels(
        predictor, plans, volume, body_mask(volume.image), threshold=threshold, chunks=chunks,
        batch_size=batch_size, largest_component=largest_component, keep_probabilities=probabilities is not None,
        progress=progress)
    labels_out = volume.to_scan(label_volume)  # [X, Y, Z]
    probs_out = None
    if kept:
        probs_out = volume.to_scan(np.stack(kept, axis=-1) if len(kept) > 1 else kept[0])  # [X, Y, Z(, N)]
        del kept

    voxel_ml = abs(float(np.linalg.det(geometry["affine"][:3, :3]))) / 1000.0
    counts = np.bincount(labels_out.ravel(), minlength=256)
    per_label = tuple(LabelResult(
        label=plan.label,
        name=names[plan.label],
        extent=volume.scan_range(top, bottom + 1),
        chunks=_chunk_ranges(volume, top, bottom, chunks) if plan.support_slices else (),
        support_slices=plan.support_slices,
        voxels=int(counts[plan.label]),
        millilitres=float(counts[plan.label]) * voxel_ml,
        support_millilitres=support_ml[plan.label]) for plan, (top, bottom) in zip(plans, predicted))
    known = model_modality(model_info.get("dataset"))
    warnings = _warnings(query, query_modality, known, pairs, support_modalities, per_label)
    record = {
        "medfss_version": __version__,
        "inputs": {"query": str(query), "query_shape": list(geometry["shape"]),
                   "query_spacing_mm": list(geometry["spacing"]),
                   "supports": [{"image": str(i), "mask": str(m), "modality": used}
                                for (i, m), used in zip(pairs, support_modalities)],
                   "reference": None if reference is None else str(reference),
                   "model": {**model_info, "modality": known}},
        "settings": {"labels": list(labels), "axis": volume.scan_axis, "slice_direction": volume.direction,
                     "orientation": orientation,
                     "query_range": list(volume.scan_range(*query_range)),
                     "extent": "given" if extent is not None else "estimated" if estimate_extent else "all slices",
                     "modality": volume.modality, "modality_rule": query_modality.rule,
                     "body_mask": True, "largest_component": largest_component, "threshold": threshold,
                     "chunks": chunks, "batch_size": batch_size,
                     "device": model_info.get("device", str(device))},
        "voxel_volume_ml": voxel_ml,
        "classes": {str(r.label): {"name": r.name, "voxels": r.voxels, "millilitres": r.millilitres,
                                   "support_millilitres": list(r.support_millilitres),
                                   "extent": list(r.extent), "chunks": [list(c) for c in r.chunks],
                                   "support_slices": [list(s) for s in r.support_slices],
                                   **({"guidance": notes} if notes else {})}
                    for r, notes in zip(per_label, guidance)},
        "warnings": warnings,
        "outputs": {k: str(v) for k, v in outputs.items() if v is not None},
        "created_folders": _missing_folders(outputs),
    }
    png = None
    if overlay is not None or report is not None:
        from medfss.overlay import png_bytes, render_overlay

        png = png_bytes(render_overlay(volume.to_scan(volume.image), labels_out, geometry["affine"],
                                       volume.scan_axis, names, truth=truth, title=Path(query).name))
    del label_volume
    record["runtime_s"] = time.perf_counter() - start_time
    result = Segmentation(labels_out, geometry["affine"], probs_out, per_label, record)
    _write_outputs(result, geometry["header"], outputs, png)
    return result


def _warnings(query: PathLike, query_modality: ModalityDecision, model_knows: str,
              pairs: Sequence[tuple[Path, Path]], support_modalities: Sequence[str],
              per_label: Sequence[LabelResult]) -> list[str]:
    """What the user must hear about a run: modality mismatches, implausible volumes."""
    found = [modality_warning(query_modality, model_knows, f"the query {query}"),
             *(f"support {image} is {used}, the query {query_modality.modality}: intensities will not match"
               for (image, _), used in zip(pairs, support_modalities) if used != query_modality.modality),
             *(volume_warning(r.title, r.millilitres, r.support_millilitres) for r in per_label)]
    return [w for w in found if w is not None]


def describe(result: Segmentation) -> list[str]:
    """A run for the terminal: per label its volume, slices and supports; the modality; warnings; new folders."""
    settings = result.summary["settings"]
    how = {"estimated": "estimated from the organ's relative extent in the support scans",
           "all slices": "every slice of the query range (no guidance)"}.get(settings["extent"], "given")
    if "guidance" in result.summary["inputs"]["model"]:
        how = "found by the supports registered onto the query (registration guidance)"
    lines = []
    for r in result.per_label:
        support = ", ".join(f"{ml:.1f}" for ml in r.support_millilitres)
        lines.append(f"{r.title}: {r.voxels} voxels, {r.millilitres:.1f} mL (support: {support} mL); "
                     f"slices {r.extent[0]}:{r.extent[1]} along axis {settings['axis']}, {how}")
        for (start, stop), *chosen in zip(r.chunks, *r.support_slices):
            lines.append(f"    query slices {start}:{stop} <- support slice {', '.join(map(str, chosen))}")
    lines.append(f"query modality {settings['modality']}: {settings['modality_rule']}")
    lines += [f"medfss: warning: {w}" for w in result.summary["warnings"]]
    lines += [f"created output folder {f} (it did not exist)" for f in result.summary["created_folders"]]
    return lines


# --- checks -------------------------------------------------------------------------------------


def _check_labels(labels: Sequence[int]) -> tuple[int, ...]:
    labels = tuple(int(v) for v in labels)
    if not labels:
        raise ConfigError("no label given: name at least one label value of the support masks, e.g. --label 1")
    if any(not 1 <= v <= 255 for v in labels):
        raise ConfigError(f"labels must be in 1..255 (the output is uint8; 0 is background), got {list(labels)}")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"labels repeat a value: {list(labels)}")
    return labels


def _check_supports(supports) -> list[tuple[Path, Path]]:
    pairs = []
    for item in supports:
        if isinstance(item, (str, os.PathLike)) or len(item) != 2:
            raise ConfigError(f"each support is an (image, mask) pair of files, got {item!r}")
        pairs.append((Path(item[0]), Path(item[1])))
    if not pairs:
        raise ConfigError("no support given: pass at least one labelled scan (--support-image and "
                          "--support-mask)")
    return pairs


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_output_paths(inputs: Sequence[PathLike], outputs: Mapping[str, PathLike | None]) -> None:
    """Every output differs from every input and from the other outputs; NIfTI outputs are named so."""
    given = {name: Path(path) for name, path in outputs.items() if path is not None}
    for name, path in given.items():
        for source in inputs:
            if _same_file(path, Path(source)):
                raise ConfigError(f"output {path} ({name}) is also an input: choose another path, inputs "
                                  "are never overwritten")
        if name in ("out", "probabilities") and not str(path).endswith(NIFTI_SUFFIXES):
            raise ConfigError(f"output {path} ({name}) must end with .nii.gz or .nii")
    names = list(given)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if _same_file(given[a], given[b]):
                raise ConfigError(f"outputs {a} and {b} are the same file {given[a]}")


def _read(path: PathLike) -> NiftiArray:
    from medfss.data.io import read_nifti

    return read_nifti(path)  # 3D and finite, or a one-line InputFileError


def _read_reference(path: PathLike, shape: tuple[int, ...]) -> np.ndarray:
    """A label volume on the query's grid (the query's ground truth), for drawing only."""
    from medfss.data.io import label_values

    reference = _read(path)
    if reference.array.shape != tuple(shape):
        raise InputFileError(f"{path}: shape {reference.array.shape} differs from the query's {tuple(shape)}; "
                             "the reference must lie on the query's grid")
    label_values(reference.array, path)
    return np.round(reference.array).astype(np.int32)


def _missing_folders(outputs: Mapping[str, PathLike | None]) -> list[str]:
    """The output folders that do not exist yet (writing creates them): the user is told."""
    return sorted({str(Path(p).parent) for p in outputs.values() if p is not None and not Path(p).parent.exists()})


# --- preprocessing ----------------------------------------------------------------------------


def _slicing_view(array: np.ndarray, reorientation: Reorientation, canonical_axis: int) -> np.ndarray:
    """[X, Y, Z] in a file's order -> canonical order with ``canonical_axis`` last: [H, W, D]."""
    return np.moveaxis(reorientation.to_canonical(array), canonical_axis, -1)


@dataclass
class _QueryVolume:
    """The normalised query, canonical, slicing axis last, and the way back to its file."""

    image: np.ndarray  # [H, W, D] float32
    reorientation: Reorientation
    canonical_axis: int
    scan_axis: int
    modality: str
    spacing: tuple[float, float, float]  # mm along H, W, D

    @classmethod
    def build(cls, img: NiftiArray, axis: int | None, modality: str, orientation: str) -> "_QueryVolume":
        from medfss.data.intensity import normalise_intensity
        from medfss.data.preprocess import Reorientation, through_plane_axis

        reorientation = Reorientation.of(img.affine, img.array.shape, orientation)
        if axis is None:
            canonical_axis = through_plane_axis(reorientation.canonical_spacing(img.spacing))
        else:
            canonical_axis = reorientation.canonical_axis(axis)
        image, used = normalise_intensity(_slicing_view(img.array, reorientation, canonical_axis), modality)
        spacing = _slicing_spacing(reorientation.canonical_spacing(img.spacing), canonical_axis)
        return cls(image, reorientation, canonical_axis, reorientation.scan_axis(canonical_axis), used, spacing)

    @property
    def direction(self) -> str:
        """The anatomical direction the slices are stacked along."""
        return self.reorientation.direction(self.canonical_axis)

    def canonical_range(self, query_range: SliceRange | None) -> SliceRange:
        """``query_range`` (file indices, half-open; None: all) -> canonical indices along the slicing axis."""
        n = self.image.shape[-1]
        if query_range is None:
            return 0, n
        start, stop = (int(v) if v is not None else default for v, default in zip(query_range, (0, n)))
        if not 0 <= start < stop <= n:
            raise ConfigError(f"query range {start}:{stop} must satisfy 0 <= start < stop <= {n} (the "
                              f"query's slices along axis {self.scan_axis})")
        return self.reorientation.range_to_canonical(self.scan_axis, start, stop)

    def scan_range(self, start: int, stop: int) -> SliceRange:
        """Canonical half-open slice range -> the query file's indices."""
        return self.reorientation.range_to_scan(self.canonical_axis, start, stop)

    def to_scan(self, array: np.ndarray) -> np.ndarray:
        """[H, W, D, ...] canonical with the slicing axis at 2 -> the query file's [X, Y, Z, ...]."""
        return np.ascontiguousarray(self.reorientation.to_scan(np.moveaxis(array, 2, self.canonical_axis)))


def _extent_map(extent, labels: Sequence[int]) -> dict[int, SliceRange]:
    if extent is None:
        return {}
    if isinstance(extent, Mapping):
        unknown = sorted(set(extent) - set(labels))
        if unknown:
            raise ConfigError(f"extent given for labels {unknown} that are not segmented ({list(labels)})")
        return {int(k): tuple(v) for k, v in extent.items()}
    return {label: tuple(extent) for label in labels}


@dataclass(frozen=True)
class _Support:
    """One support scan: canonical normalised image, integer mask, and its geometry."""

    image: np.ndarray  # [X, Y, Z] float32 canonical order
    mask: np.ndarray  # [X, Y, Z] float32 integer values, canonical order
    reorientation: Reorientation
    mask_path: Path
    modality: str
    spacing: tuple[float, float, float]  # mm, canonical order
    voxel_ml: float

    def millilitres(self, label: int) -> float:
        """The volume of ``label`` in this support mask."""
        return float(np.count_nonzero(self.mask == label)) * self.voxel_ml


def _read_support(image_path: Path, mask_path: Path, labels: Sequence[int], modality: str,
                  orientation: str) -> _Support:
    from medfss.data.io import label_values
    from medfss.data.intensity import normalise_intensity
    from medfss.data.preprocess import Reorientation
    from medfss.inference import check_informative

    image = _read(image_path)
    check_informative(image.array, str(image_path))
    mask = _read(mask_path)
    if image.array.shape != mask.array.shape:
        raise InputFileError(f"{mask_path}: shape {mask.array.shape} differs from its scan {image_path.name} "
                             f"{image.array.shape}")
    if not np.allclose(mask.affine, image.affine, atol=GRID_TOLERANCE_MM):
        raise InputFileError(f"{mask_path}: affine (voxel orientation, spacing or origin) differs from its scan "
                             f"{image_path.name}; the mask must lie on the scan's grid")
    reorientation = Reorientation.of(image.affine, image.array.shape, orientation)
    values = label_values(mask.array, mask_path)
    present = [int(v) for v in values if v != 0]
    if not present:
        raise LabelMapError(f"{mask_path}: the support mask is empty (every voxel is 0); label the organ on "
                            "at least one slice")
    missing = [label for label in labels if label not in present]
    if missing:
        raise LabelMapError(f"{mask_path}: label {', '.join(map(str, missing))} is absent from this support "
                            f"mask (it holds {present}); choose --label among them")
    normalised, used = normalise_intensity(image.array, decide_modality(image.array, modality, image_path).modality)
    return _Support(reorientation.to_canonical(normalised), reorientation.to_canonical(mask.array),
                    reorientation, mask_path, used, reorientation.canonical_spacing(image.spacing),
                    abs(float(np.linalg.det(image.affine[:3, :3]))) / 1000.0)


@dataclass(frozen=True)
class _LabelPlan:
    """What one label is predicted from: its supports, the query slices, and the support slices used."""

    label: int
    supports: tuple[SupportScan, ...]  # the label's masks, in the query's slicing layout
    extent: tuple[int, int] | None  # canonical, inclusive; None: the whole volume (volume predictors)
    support_slices: tuple[tuple[int, ...], ...]  # per support: file index of each chunk's slice (slice predictors)


def _plan_label(label: int, supports: Sequence[_Support], volume: _QueryVolume, query_range: SliceRange,
                given_extent: SliceRange | None, chunks: int, whole_volume: bool,
                estimate_extent: bool = True) -> _LabelPlan:
    """The supports and extent of one label; ``whole_volume``: a volume predictor without a given extent;
    without ``estimate_extent`` (and without a given extent) every slice of ``query_range``."""
    from medfss.inference import SupportScan, chunk_support_slices, estimated_extent

    scans = tuple(SupportScan(np.moveaxis(s.image, volume.canonical_axis, -1),  # [h, w, d]
                              np.moveaxis(s.mask, volume.canonical_axis, -1) == label,
                              _slicing_spacing(s.spacing, volume.canonical_axis)) for s in supports)
    if given_extent is not None:
        start, stop = volume.canonical_range(given_extent)
        if not query_range[0] <= start < stop <= query_range[1]:
            raise ConfigError(f"extent {given_extent[0]}:{given_extent[1]} of label {label} lies outside "
                              f"the query range {':'.join(map(str, volume.scan_range(*query_range)))}")
        extent = (start, stop - 1)
    elif whole_volume:
        extent = (query_range[0], query_range[1] - 1) if query_range != (0, volume.image.shape[-1]) else None
    elif not estimate_extent:
        extent = (query_range[0], query_range[1] - 1)
    else:
        extent = estimated_extent(scans, query_range)
    used = () if whole_volume else tuple(
        tuple(s.reorientation.range_to_scan(volume.canonical_axis, z, z + 1)[0]
              for z in chunk_support_slices(scan.labelled_slices, chunks))
        for s, scan in zip(supports, scans))
    return _LabelPlan(label, scans, extent, used)


# --- prediction ---------------------------------------------------------------------------------


def _predict_labels(predictor: Predictor | VolumePredictor, plans: Sequence[_LabelPlan], volume: _QueryVolume,
                    body: np.ndarray, *, threshold: float, chunks: int, batch_size: int, largest_component: bool,
                    keep_probabilities: bool, progress: bool) -> tuple[np.ndarray, list[np.ndarray], list, list]:
    """The multi-label map [H, W, D] uint8, if asked each label's probabilities [H, W, D] float32, each
    label's predicted extent (canonical, inclusive) and what a guided predictor reported for it.

    Label by label (:func:`medfss.inference.predict_class`, 0 outside the
    ``body`` mask [H, W, D]): foreground = probability > threshold on the
    label's extent, optionally cut to its largest component; a voxel claimed
    by several labels goes to the most probable one.
    """
    from tqdm.auto import tqdm

    from medfss.inference import foreground, predict_class

    hwd = volume.image.shape  # [H, W, D], slicing axis last
    label_volume = np.zeros(hwd, dtype=np.uint8)  # [H, W, D]
    best = np.zeros(hwd, dtype=np.float32) if len(plans) > 1 else None  # [H, W, D]: the winner's probability
    kept, extents, guidance = [], [], []
    total = sum(hwd[-1] if p.extent is None else p.extent[1] - p.extent[0] + 1 for p in plans)
    with tqdm(total=total, disable=not progress, unit="slice", desc="segment") as bar:
        for plan in plans:
            top, slab = predict_class(predictor, plan.supports, volume.image, volume.spacing, plan.extent,
                                      chunks=chunks, batch_size=batch_size, body=body,
                                      progress=bar.update)  # [H, W, n]
            bottom = top + slab.shape[-1] - 1
            notes = dict(getattr(predictor, "last_guidance", {}))
            guidance.append(notes)
            # a guided predictor returns the whole volume, but its labels lie on the slices the network predicted
            extents.append(tuple(notes.pop("network_slices", (top, bottom))))
            mask = foreground(slab, threshold, largest_component)
            region = label_volume[..., top:bottom + 1]  # views on the extent's slices
            if best is None:
                region[mask] = plan.label
            else:
                best_region = best[..., top:bottom + 1]
                wins = mask & (slab > best_region)
                region[wins] = plan.label
                best_region[wins] = slab[wins]
            if keep_probabilities:
                full = np.zeros(hwd, dtype=np.float32)  # [H, W, D]
                full[..., top:bottom + 1] = slab
                kept.append(full)
    return label_volume, kept, extents, guidance


def _chunk_ranges(volume: _QueryVolume, top: int, bottom: int, chunks: int) -> tuple[SliceRange, ...]:
    """The query slices (file indices, half-open) of each chunk of the extent ``top..bottom`` (the chunk rule)."""
    from medfss.inference import assign_query_chunks

    chunk_of = np.asarray(assign_query_chunks((top, bottom), chunks))  # [bottom - top + 1]
    members = [top + np.flatnonzero(chunk_of == c) for c in range(chunks)]
    return tuple(volume.scan_range(int(m[0]), int(m[-1]) + 1) for m in members if m.size)


def _slicing_spacing(spacing: tuple[float, float, float], canonical_axis: int) -> tuple[float, float, float]:
    """Canonical spacing -> the slicing layout's (the slicing axis last, as ``np.moveaxis`` puts it)."""
    order = [axis for axis in range(3) if axis != canonical_axis] + [canonical_axis]
    return tuple(float(spacing[axis]) for axis in order)


def _write_outputs(result: Segmentation, header, outputs: Mapping[str, PathLike | None],
                   png: bytes | None) -> None:
    """Each requested output through a temporary file and a rename; the query's header with its geometry."""
    from medfss.data.io import write_atomic, write_nifti_atomic, write_text_atomic

    if outputs["out"] is not None:
        label_header = header.copy()
        label_header["cal_min"], label_header["cal_max"] = 0, int(result.labels.max())
        write_nifti_atomic(result.labels, result.affine, outputs["out"], label_header)
    if outputs["probabilities"] is not None:
        prob_header = header.copy()
        prob_header["cal_min"], prob_header["cal_max"] = 0, 1
        write_nifti_atomic(result.probabilities, result.affine, outputs["probabilities"], prob_header)
    if outputs["overlay"] is not None:
        write_atomic(outputs["overlay"], lambda tmp: Path(tmp).write_bytes(png), suffix=".png")
    if outputs["summary"] is not None:
        write_text_atomic(json.dumps(result.summary, indent=2) + "\n", outputs["summary"])
    if outputs["report"] is not None:
        from medfss.html_report import segmentation_report

        write_text_atomic(segmentation_report(result.summary, png), outputs["report"])
