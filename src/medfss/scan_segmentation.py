"""Segment a new scan from a few labelled ones: ``medfss.segment`` and ``medfss segment``.

    result = medfss.segment("query.nii.gz", supports=[("s.nii.gz", "s_mask.nii.gz")], labels=[1, 2],
                            checkpoint="run/model.pt", out="pred.nii.gz")

What happens, for each requested label (all labels use the same supports):

1. Every scan is read with its geometry and turned to the voxel order the
   model was trained in (recorded in its checkpoint, e.g. LAS for CHAOST2;
   RAS+ if it records none; called "canonical" below) by permutations and
   flips only (:mod:`medfss.data.preprocess`); intensities are normalised as in
   training (MR: z-score per volume; CT: clipped to [-125, 275] HU, then
   z-scored).
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
4. The label's foreground is ``probability > threshold``; by default only its
   largest 3D connected component (26-connectivity) is kept, which removes
   scattered false positives.
5. With several labels, a voxel claimed by more than one goes to the label
   with the highest probability; the output is one multi-label map holding
   the label values given (0 = background).
6. The result is put back on the query's grid: the label NIfTI has the
   query's shape, affine and header, with dtype uint8 (and cal_min/cal_max
   set to the label range so that viewers show it).

Memory: the query volume, the uint8 label volume, the float32 probabilities
of the current label's extent (and, with several labels, a float32 volume of
the best probability so far), and one batch of ``batch_size`` query slices in
the model: never the model's output for the whole scan. The
``probabilities`` output holds one float32 volume per label.

Outputs are computed in full before any is written, each through a temporary
file and a rename; an output path equal to an input is an error before any
work, and inputs are never modified. Heavy modules (torch, nibabel, the
models) are imported inside the functions, so ``import medfss`` stays light.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medfss import __version__
from medfss.errors import ConfigError, InputFileError, LabelMapError

if TYPE_CHECKING:
    from medfss.data.io import NiftiArray
    from medfss.data.preprocess import Reorientation
    from medfss.inference import Predictor, SlicePlan

PathLike = str | os.PathLike
SliceRange = tuple[int | None, int | None]  # half-open (start, stop) along the query file's slicing axis;
# None: from the first / to the last slice
NIFTI_SUFFIXES = (".nii", ".nii.gz")
OVERLAY_SLICES = 6
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
    extent: SliceRange  # half-open, query file voxel indices along the slicing axis
    support_slices: tuple[tuple[int, ...], ...]  # per support: the slice of each chunk (its file's indices)
    voxels: int
    millilitres: float


@dataclass(frozen=True)
class Segmentation:
    """The prediction on the query's grid, and what produced it."""

    labels: np.ndarray  # [X, Y, Z] uint8, the query file's voxel order
    affine: np.ndarray  # [4, 4], the query's
    probabilities: np.ndarray | None  # [X, Y, Z] (one label) or [X, Y, Z, N] float32; None unless asked
    per_label: tuple[LabelResult, ...]
    summary: dict[str, Any] = field(repr=False)  # the JSON summary


def segment(query: PathLike, supports: Sequence[tuple[PathLike, PathLike]], labels: Sequence[int] = (1,), *,
            checkpoint: PathLike | None = None, predictor: Predictor | None = None,
            axis: int | None = None, query_range: SliceRange | None = None, orientation: str | None = None,
            extent: SliceRange | Mapping[int, SliceRange] | None = None,
            modality: str = "auto", largest_component: bool = True, threshold: float = 0.5,
            chunks: int = 3, device: str = "auto", batch_size: int = 8,
            out: PathLike | None = None, probabilities: PathLike | None = None,
            overlay: PathLike | None = None, summary: PathLike | None = None,
            progress: bool = True) -> Segmentation:
    """Segment ``labels`` in the ``query`` scan from labelled ``supports`` (see the module docstring).

    query: a 3D NIfTI file. supports: ``(image, mask)`` NIfTI file pairs; each
    mask must hold every label of ``labels`` (values 1..255).
    checkpoint: an exported model or training checkpoint (default:
    :func:`default_checkpoint`); or pass ``predictor``, any
    :class:`~medfss.inference.predictor.Predictor`, instead.
    axis: the query file's voxel axis to slice along (default: largest spacing).
    orientation: the voxel order the model works in, as axis codes (e.g.
    "LAS"); default: the one recorded in the checkpoint, else RAS.
    query_range: half-open ``(start, stop)`` slice indices along that axis
    that the support scans cover (default: the whole query).
    extent: the slices to predict, ``(start, stop)`` for every label or a
    ``{label: (start, stop)}`` map (default: estimated from the supports).
    modality: ``auto``, ``MR`` or ``CT`` (intensity normalisation).
    out, probabilities, overlay, summary: where to write the label NIfTI,
    the float32 probability NIfTI, the PNG montage and the JSON summary
    (each optional; nothing is written without them).
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
    from medfss.data.preprocess import MODALITIES
    if modality not in MODALITIES:
        raise ConfigError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
    outputs = {"out": out, "probabilities": probabilities, "overlay": overlay, "summary": summary}
    inputs = [query, *(p for pair in pairs for p in pair)]
    if predictor is None:
        checkpoint = default_checkpoint() if checkpoint is None else checkpoint
        inputs.append(checkpoint)
    _check_output_paths(inputs, outputs)

    if predictor is None:
        from medfss.checkpoints import load_predictor

        predictor, model_info = load_predictor(checkpoint, device=device, batch_size=batch_size)
    else:
        model_info = {"predictor": type(predictor).__name__}
    from medfss.data.preprocess import DEFAULT_ORIENTATION, check_axcodes
    orientation = orientation or model_info.get("slice_orientation") or DEFAULT_ORIENTATION
    try:
        check_axcodes(orientation)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    query_img = _read(query)
    volume = _QueryVolume.build(query_img, axis, modality, orientation)
    geometry = {"affine": query_img.affine, "header": query_img.header, "shape": query_img.array.shape,
                "spacing": query_img.spacing}
    del query_img  # the normalised copy in ``volume`` is all that is needed from here
    query_range = volume.canonical_range(query_range)
    extents = _extent_map(extent, labels)
    support_data = [_read_support(image, mask, labels, modality, orientation)
                    for image, mask in pairs]  # all checked before any prediction
    plans = [_plan_label(label, support_data, volume, query_range, extents.get(label), chunks)
             for label in labels]
    support_modalities = [s.modality for s in support_data]
    del support_data  # the plans hold the chosen support slices only

    label_volume, kept = _predict_labels(predictor, plans, volume, threshold=threshold, batch_size=batch_size,
                                         largest_component=largest_component,
                                         keep_probabilities=probabilities is not None, progress=progress)
    labels_out = volume.to_scan(label_volume)  # [X, Y, Z]
    probs_out = None
    if kept:
        probs_out = volume.to_scan(np.stack(kept, axis=-1) if len(kept) > 1 else kept[0])  # [X, Y, Z(, N)]
        del kept

    voxel_ml = abs(float(np.linalg.det(geometry["affine"][:3, :3]))) / 1000.0
    counts = np.bincount(labels_out.ravel(), minlength=256)
    per_label = tuple(LabelResult(
        label=plan.label,
        extent=volume.scan_range(plan.slices.top, plan.slices.bottom + 1),
        support_slices=plan.support_slices,
        voxels=int(counts[plan.label]),
        millilitres=float(counts[plan.label]) * voxel_ml) for plan in plans)
    record = {
        "medfss_version": __version__,
        "inputs": {"query": str(query), "query_shape": list(geometry["shape"]),
                   "query_spacing_mm": list(geometry["spacing"]),
                   "supports": [{"image": str(i), "mask": str(m), "modality": used}
                                for (i, m), used in zip(pairs, support_modalities)],
                   "model": model_info},
        "settings": {"labels": list(labels), "axis": volume.scan_axis, "slice_direction": volume.direction,
                     "orientation": orientation,
                     "query_range": list(volume.scan_range(*query_range)),
                     "extent": "given" if extent is not None else "estimated", "modality": volume.modality,
                     "largest_component": largest_component, "threshold": threshold, "chunks": chunks,
                     "batch_size": batch_size, "device": model_info.get("device", str(device))},
        "voxel_volume_ml": voxel_ml,
        "classes": {str(r.label): {"voxels": r.voxels, "millilitres": r.millilitres,
                                   "extent": list(r.extent),
                                   "support_slices": [list(s) for s in r.support_slices]} for r in per_label},
        "outputs": {k: str(v) for k, v in outputs.items() if v is not None},
    }
    png = _render_overlay(volume, label_volume, labels) if overlay is not None else None
    del label_volume
    record["runtime_s"] = time.perf_counter() - start_time
    result = Segmentation(labels_out, geometry["affine"], probs_out, per_label, record)
    _write_outputs(result, geometry["header"], outputs, png)
    return result


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

    @classmethod
    def build(cls, img: NiftiArray, axis: int | None, modality: str, orientation: str) -> "_QueryVolume":
        from medfss.data.preprocess import Reorientation, normalize_intensity, through_plane_axis

        reorientation = Reorientation.of(img.affine, img.array.shape, orientation)
        if axis is None:
            canonical_axis = through_plane_axis(reorientation.canonical_spacing(img.spacing))
        else:
            canonical_axis = reorientation.canonical_axis(axis)
        image, used = normalize_intensity(_slicing_view(img.array, reorientation, canonical_axis), modality)
        return cls(image, reorientation, canonical_axis, reorientation.scan_axis(canonical_axis), used)

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


def _read_support(image_path: Path, mask_path: Path, labels: Sequence[int], modality: str,
                  orientation: str) -> _Support:
    from medfss.data.io import label_values
    from medfss.data.preprocess import Reorientation, normalize_intensity

    image = _read(image_path)
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
    normalised, used = normalize_intensity(image.array, modality)
    return _Support(reorientation.to_canonical(normalised), reorientation.to_canonical(mask.array),
                    reorientation, mask_path, used)


@dataclass(frozen=True)
class _LabelPlan:
    """One label's slice plan (canonical indices) and the support slices it uses in their files' indices."""

    label: int
    slices: SlicePlan
    support_slices: tuple[tuple[int, ...], ...]  # per support: file index of each group's slice


def _plan_label(label: int, supports: Sequence[_Support], volume: _QueryVolume, query_range: SliceRange,
                given_extent: SliceRange | None, chunks: int) -> _LabelPlan:
    from medfss.inference import SupportScan, chunk_plan, estimated_extent

    scans = [SupportScan(np.moveaxis(s.image, volume.canonical_axis, -1),  # [h, w, d]
                         np.moveaxis(s.mask, volume.canonical_axis, -1) == label) for s in supports]
    if given_extent is None:
        extent = estimated_extent(scans, query_range)
    else:
        start, stop = volume.canonical_range(given_extent)
        if not query_range[0] <= start < stop <= query_range[1]:
            raise ConfigError(f"extent {given_extent[0]}:{given_extent[1]} of label {label} lies outside "
                              f"the query range {':'.join(map(str, volume.scan_range(*query_range)))}")
        extent = (start, stop - 1)
    plan = chunk_plan(scans, extent, volume.image.shape[:2], chunks)
    used = tuple(tuple(s.reorientation.range_to_scan(volume.canonical_axis, z, z + 1)[0] for z in chosen)
                 for s, chosen in zip(supports, plan.support_slices))
    return _LabelPlan(label, plan, used)


# --- prediction ---------------------------------------------------------------------------------


def _predict_labels(predictor: Predictor, plans: Sequence[_LabelPlan], volume: _QueryVolume, *,
                    threshold: float, batch_size: int, largest_component: bool, keep_probabilities: bool,
                    progress: bool) -> tuple[np.ndarray, list[np.ndarray]]:
    """The multi-label map [H, W, D] uint8 and, if asked, each label's probabilities [H, W, D] float32.

    Label by label (:func:`medfss.inference.predict_volume` on its plan):
    foreground = probability > threshold on the label's extent, optionally
    cut to its largest component; a voxel claimed by several labels goes to
    the most probable one.
    """
    from tqdm.auto import tqdm

    from medfss.inference import foreground, n_batches, predict_volume

    hwd = volume.image.shape  # [H, W, D], slicing axis last
    label_volume = np.zeros(hwd, dtype=np.uint8)  # [H, W, D]
    best = np.zeros(hwd, dtype=np.float32) if len(plans) > 1 else None  # [H, W, D]: the winner's probability
    kept = []
    total = sum(n_batches(p.slices, batch_size) for p in plans)
    with tqdm(total=total, disable=not progress, unit="batch", desc="segment") as bar:
        for label, plan in ((p.label, p.slices) for p in plans):
            slab = predict_volume(predictor, volume.image, plan, batch_size=batch_size,
                                  progress=bar.update)  # [H, W, n] of the extent
            mask = foreground(slab, threshold, largest_component)
            region = label_volume[..., plan.top:plan.bottom + 1]  # views on the extent's slices
            if best is None:
                region[mask] = label
            else:
                best_region = best[..., plan.top:plan.bottom + 1]
                wins = mask & (slab > best_region)
                region[wins] = label
                best_region[wins] = slab[wins]
            if keep_probabilities:
                full = np.zeros(hwd, dtype=np.float32)  # [H, W, D]
                full[..., plan.top:plan.bottom + 1] = slab
                kept.append(full)
    return label_volume, kept


# --- outputs ------------------------------------------------------------------------------------


def _render_overlay(volume: _QueryVolume, label_volume: np.ndarray, labels: Sequence[int]) -> bytes:
    """A PNG montage of a few query slices with each label's contour, as bytes."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas, no global backend change
    from matplotlib.lines import Line2D

    found = np.flatnonzero(label_volume.any(axis=(0, 1)))
    lo, hi = (int(found[0]), int(found[-1])) if found.size else (0, label_volume.shape[-1] - 1)
    picks = np.unique(np.linspace(lo, hi, min(OVERLAY_SLICES, hi - lo + 1)).round().astype(int))
    picks = sorted(picks, key=lambda z: volume.scan_range(int(z), int(z) + 1)[0])  # in file order
    shown = volume.image[..., picks]  # [H, W, n]: one grey window for every panel
    vmin, vmax = np.percentile(shown, 1), np.percentile(shown, 99)
    fig = Figure(figsize=(2.4 * len(picks), 2.9), dpi=100)
    colors = matplotlib.colormaps["tab10"]
    for i, z in enumerate(picks):
        ax = fig.add_subplot(1, len(picks), i + 1)
        ax.imshow(volume.image[..., z].T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax)  # [W, H]
        for j, label in enumerate(labels):
            mask = label_volume[..., z].T == label
            if mask.any() and not mask.all():
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colors(j % 10)], linewidths=1.0)
        ax.set_title(f"slice {volume.scan_range(int(z), int(z) + 1)[0]}", fontsize=8)
        ax.set_axis_off()
    fig.legend(handles=[Line2D([0], [0], color=colors(j % 10), label=f"label {label}")
                        for j, label in enumerate(labels)], loc="lower center", ncol=len(labels), fontsize=8,
               frameon=False)
    fig.suptitle(f"query slices along axis {volume.scan_axis}, {volume.direction}", fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


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
