"""Overlay montages that need no decoder: organ names, ground truth, radiological view.

:func:`overlay_figure` draws a few slices of a scan with each label's
contour; :func:`render_overlay` returns that picture as an RGBA array and
:func:`png_bytes` encodes it.

* Orientation: the volumes are first put in RAS+ voxel order from their
  affine (permutations and flips only), whatever order the file or the model
  uses, and every slice is shown in the radiological convention: the
  patient's right on the image's left; anterior (axial) or superior (coronal,
  sagittal) at the top; on sagittal slices anterior on the left. Each panel
  names its four sides (R/L, A/P, S/I). An LAS and an RAS copy of one scan
  therefore give the same picture.
* Names: the legend reads the names given (e.g. ``liver``), never bare values.
* Colours: the Okabe-Ito palette (Okabe & Ito 2008), whose seven colours stay
  distinct under the common colour-vision deficiencies; beyond seven labels
  the line style changes too, so no two labels share a line.
* Ground truth: when given, a second row shows it on the same slices, with
  the same colours, under the prediction.

Shapes: [X, Y, Z] volumes in their file's voxel order with a [4, 4] affine.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")  # no black: the
# background is grey
LINE_STYLES = ("solid", "dashed", "dotted", "dashdot")
RAS = "RAS"
OPPOSITE = {"R": "L", "A": "P", "S": "I"}
VIEW_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}  # by the RAS axis the slices are cut along
N_SLICES = 6


def label_style(index: int) -> tuple[str, str]:
    """(colour, line style) of the ``index``-th label: Okabe-Ito colours, then the next line style."""
    return OKABE_ITO[index % len(OKABE_ITO)], LINE_STYLES[(index // len(OKABE_ITO)) % len(LINE_STYLES)]


def radiological(section: np.ndarray) -> np.ndarray:
    """A slice [a, b] of a RAS volume (a, b: its two remaining axes, in RAS order) -> display [rows, cols].

    Both axes are reversed and transposed: rows run from the positive end of
    b (anterior or superior) down, columns from the positive end of a (the
    patient's right, or anterior on sagittal slices) to the right.
    """
    return section.T[::-1, ::-1]


def side_letters(ras_axis: int) -> dict[str, str]:
    """The anatomical side at each edge of a :func:`radiological` slice cut along RAS axis ``ras_axis``."""
    a, b = (RAS[i] for i in range(3) if i != ras_axis)
    return {"left": a, "right": OPPOSITE[a], "top": b, "bottom": OPPOSITE[b]}


def pick_slices(layers: list[np.ndarray], n: int = N_SLICES) -> np.ndarray:
    """Up to ``n`` evenly spaced slice indices (last axis) over the slices where any layer is non-zero."""
    depth = layers[0].shape[-1]
    found = np.flatnonzero(np.any([layer.any(axis=(0, 1)) for layer in layers], axis=0))
    lo, hi = (int(found[0]), int(found[-1])) if found.size else (0, depth - 1)
    return np.unique(np.linspace(lo, hi, min(n, hi - lo + 1)).round().astype(int))


def overlay_figure(image: np.ndarray, prediction: np.ndarray, affine: np.ndarray, axis: int,
                   names: Mapping[int, str], truth: np.ndarray | None = None, title: str = "",
                   n_slices: int = N_SLICES) -> Figure:
    """The montage as a matplotlib Figure (see the module docstring).

    image, prediction, truth: [X, Y, Z] on one grid (file voxel order), with
    ``affine``; axis: the file's voxel axis the slices are cut along; names:
    label value -> name, in legend order (values absent from it are not drawn);
    up to ``n_slices`` slices, evenly over those holding a label.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend change
    from matplotlib.lines import Line2D

    from medfss.data.preprocess import Reorientation

    ras = Reorientation.of(affine, image.shape, RAS)
    ras_axis = ras.canonical_axis(axis)

    def cut(volume: np.ndarray) -> np.ndarray:  # [X, Y, Z] file order -> RAS with the slicing axis last
        return np.moveaxis(ras.to_canonical(volume), ras_axis, -1)

    rows = [("prediction", cut(prediction))] + ([("ground truth", cut(truth))] if truth is not None else [])
    grey = cut(image)  # [a, b, D]
    picks = pick_slices([layer for _, layer in rows], n_slices)
    shown = grey[..., picks]
    vmin, vmax = np.percentile(shown, 1), np.percentile(shown, 99)
    sides = side_letters(ras_axis)
    fig = Figure(figsize=(2.4 * len(picks), 2.5 * len(rows) + 0.9), dpi=100)
    for r, (row_name, layer) in enumerate(rows):
        for i, z in enumerate(picks):
            ax = fig.add_subplot(len(rows), len(picks), r * len(picks) + i + 1)
            ax.imshow(radiological(grey[..., z]), cmap="gray", vmin=vmin, vmax=vmax)
            for j, (value, _) in enumerate(names.items()):
                mask = radiological(layer[..., z] == value)
                if mask.any() and not mask.all():
                    colour, style = label_style(j)
                    ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linestyles=[style],
                               linewidths=1.2)
            for where, (x, y, ha, va) in {"left": (0.01, 0.5, "left", "center"),
                                           "right": (0.99, 0.5, "right", "center"),
                                           "top": (0.5, 0.99, "center", "top"),
                                           "bottom": (0.5, 0.01, "center", "bottom")}.items():
                ax.text(x, y, sides[where], transform=ax.transAxes, ha=ha, va=va, color="white", fontsize=7)
            file_index = ras.range_to_scan(ras_axis, int(z), int(z) + 1)[0]
            ax.set_title(f"{row_name}, slice {file_index}", fontsize=7)
            ax.set_axis_off()
    handles = [Line2D([0], [0], color=label_style(j)[0], linestyle=label_style(j)[1], linewidth=2, label=name)
               for j, name in enumerate(names.values())]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False)
    view = f"{VIEW_NAMES[ras_axis]} slices along voxel axis {axis}, radiological view (patient's right on the left)"
    fig.suptitle(f"{title}\n{view}" if title else view, fontsize=8)
    return fig


def render_overlay(*args, **kwargs) -> np.ndarray:
    """:func:`overlay_figure` (same arguments) drawn as RGBA uint8 [rows, cols, 4]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(overlay_figure(*args, **kwargs))
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()  # [rows, cols, 4] uint8


def evaluation_drawer(folder: str | os.PathLike) -> Callable[[int, int, str], Callable]:
    """For ``medfss evaluate --overlays``: per run, a drawer writing ``folder/fold{f}_support{i}_{class}_query{id}.png``.

    Each picture is one class's prediction with the ground truth under it, on
    the query as the protocol reads it (its file's voxel order and affine).
    """
    from medfss.data.io import write_atomic

    def for_run(fold: int, support_index: int, class_name: str) -> Callable:
        def draw(query, prediction: np.ndarray, truth: np.ndarray) -> None:
            rgba = render_overlay(query.image, prediction.astype(np.uint8), query.affine, 2, {1: class_name},
                                  truth=truth.astype(np.uint8), title=f"{query.case_id}, fold {fold}, support "
                                  f"index {support_index}")
            path = Path(folder) / f"fold{fold}_support{support_index}_{class_name}_query{query.case_id}.png"
            write_atomic(path, lambda tmp: Path(tmp).write_bytes(png_bytes(rgba)), suffix=".png")
        return draw

    return for_run


def png_bytes(rgba: np.ndarray) -> bytes:
    """Encode an RGBA uint8 array as PNG."""
    from matplotlib.image import imsave

    buffer = io.BytesIO()
    imsave(buffer, rgba, format="png")
    return buffer.getvalue()
