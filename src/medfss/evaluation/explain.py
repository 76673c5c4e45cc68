"""The iterates of an unfolded model on one query slice, drawn as in Fig. 7 of the LMS-Net paper.

One row per stage k = 0..K (k = 0: the Initialisation Module), three panels per row:

    u_1^k > 1/2              the foreground mask after binarisation
    v_1^k                    the dual variable ("predicted noise"), one symmetric colour scale for all stages
    E(u^k) = -sum_i u_i ln u_i   the entropy of the mask, 0 (certain) to ln 2 (undecided)

Each map is brought to the slice's size as the model's own output is
(bilinear on the logits and on v), so the panels align with the query.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from medfss.data.episodes import Episode
from medfss.data.io import write_atomic
from medfss.errors import ConfigError

PANEL_INCHES = 2.2
COLUMNS = ("mask u_1 > 0.5", "dual v_1", "entropy E(u)")


@torch.no_grad()
def stage_maps(model: torch.nn.Module, episode: Episode, index: int = 0) -> list[dict[str, torch.Tensor]]:
    """Per stage, the maps drawn by :func:`explain_figure` for episode ``index``, each [H, W] at the query size.

    Keys: ``mask`` (bool), ``v`` and ``entropy`` (float). The model runs in
    inference mode; its training flag is restored afterwards.
    """
    if not hasattr(model, "stages"):
        raise ConfigError(f"{type(model).__name__} has no unfolded stages to explain; "
                          f"use an unfolded model (lmsnet, flmsnet)")
    if not 0 <= index < episode.batch_size:
        raise ValueError(f"index must be in [0, {episode.batch_size}) for this episode batch, got {index}")
    was_training = model.training
    model.eval()
    try:
        stages = model.stages(episode)
    finally:
        model.train(was_training)
    size = episode.query_images.shape[-2:]
    maps = []
    for stage in stages:
        logits = F.interpolate(stage["logits"][index:index + 1], size=size, mode="bilinear",
                               align_corners=False)  # [1, 2, H, W]
        v = F.interpolate(stage["v"][index:index + 1], size=size, mode="bilinear", align_corners=False)  # [1, 2, H, W]
        u = logits.softmax(dim=1)[0]  # [2, H, W]
        maps.append({"mask": u[1] > 0.5, "v": v[0, 1], "entropy": -torch.xlogy(u, u).sum(dim=0)})
    return maps


def explain_figure(model: torch.nn.Module, episode: Episode, out_path: str | os.PathLike, *, index: int = 0,
                   dpi: int = 100) -> dict:
    """Write the Fig. 7-style PNG of episode ``index`` to ``out_path`` (atomically) and describe it.

    ``model``: an unfolded model with a ``stages(episode)`` method (LMS-Net,
    fLMS-Net). Returns ``{"path", "stages", "panels", "columns", "width_px",
    "height_px", "max_abs_v"}``; ``panels = 3 * stages``. Raises
    :class:`~medfss.errors.ConfigError` for a model without stages.
    """
    maps = stage_maps(model, episode, index)
    v_limit = max(max(float(m["v"].abs().max()) for m in maps), 1e-12)
    figure = Figure(figsize=(len(COLUMNS) * PANEL_INCHES, len(maps) * PANEL_INCHES), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(maps), len(COLUMNS), squeeze=False)
    for k, (row, stage) in enumerate(zip(axes, maps)):
        row[0].imshow(stage["mask"].float().numpy(), cmap="gray", vmin=0, vmax=1)
        row[1].imshow(stage["v"].numpy(), cmap="RdBu_r", vmin=-v_limit, vmax=v_limit)
        row[2].imshow(stage["entropy"].numpy(), cmap="magma", vmin=0, vmax=math.log(2))
        for ax, title in zip(row, COLUMNS):
            ax.set_title(f"k = {k}: {title}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    figure.suptitle(f"{type(model).__name__}: iterates (v in [-{v_limit:.3g}, {v_limit:.3g}], E in [0, ln 2])",
                    fontsize=9)
    figure.tight_layout()
    path = write_atomic(out_path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi), suffix=".png")
    width, height = figure.canvas.get_width_height()
    return {"path": str(Path(path)), "stages": len(maps), "panels": len(maps) * len(COLUMNS),
            "columns": list(COLUMNS), "width_px": width, "height_px": height, "max_abs_v": v_limit}
