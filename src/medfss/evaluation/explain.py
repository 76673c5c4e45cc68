"""What a model computes on one query slice: the iterates of an unfolded model (LMS-Net Fig. 7), or the
maps a model exposes through ``explain_maps`` (APSCL's spatial attention, ADNet's anomaly score).

One row per stage k = 0..K (k = 0: the Initialisation Module), three panels per row:

    u_1^k > 1/2              the foreground mask after binarisation
    v_1^k                    the dual variable ("predicted noise"), one symmetric colour scale for all stages
    E(u^k) = -sum_i u_i ln u_i   the entropy of the mask, 0 (certain) to ln 2 (undecided)

Each map is brought to the slice's size as the model's own output is
(bilinear on the logits and on v), so the panels align with the query.

A model with ``explain_maps(episode, index)`` instead gets one row of panels
(:func:`model_panels`):

    APSCL   query, P(foreground), support with its mask, then the rows of the
            spatial interaction's attention (eq. 4): W_{q,s} of the query's
            most foreground cell q over the support, W_{s,q} of the support
            mask's most foreground cell s over the query (q and s marked x)
    ADNet   query, the anomaly score A with the learned threshold T, the
            prediction A < T, and the training-time soft mask sigmoid(kappa (T - A))
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
        raise ConfigError(f"{type(model).__name__} has no unfolded stages or explain maps to draw; "
                          f"use lmsnet, flmsnet, apscl or adnet")
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


def _grid_row(row: torch.Tensor, grid: tuple[int, int], size: torch.Size) -> torch.Tensor:
    """One attention row [L] as a map at the slice's ``size`` (nearest: each cell stays a visible block)."""
    return F.interpolate(row.view(1, 1, *grid), size=size, mode="nearest")[0, 0]


def _cell_centre(cell: int, grid: tuple[int, int], size: torch.Size) -> tuple[float, float]:
    """(x, y) in slice pixels of the centre of feature-grid ``cell``."""
    y, x = divmod(cell, grid[1])
    return (x + 0.5) * size[1] / grid[1], (y + 0.5) * size[0] / grid[0]


def model_panels(model: torch.nn.Module, episode: Episode, index: int = 0) -> list[dict]:
    """The panels of a model with ``explain_maps``: dicts of ``title``, ``image`` [H, W] and drawing options.

    Options: ``cmap``, ``vmin``, ``vmax``, ``contour`` (a mask [H, W] outlined
    in red) and ``point`` ((x, y) marked with a cross). The model runs in
    inference mode; its training flag is restored afterwards.
    """
    if not 0 <= index < episode.batch_size:
        raise ValueError(f"index must be in [0, {episode.batch_size}) for this episode batch, got {index}")
    was_training = model.training
    model.eval()
    try:
        maps = model.explain_maps(episode, index)
    finally:
        model.train(was_training)
    size = episode.query_images.shape[-2:]
    query = episode.query_images[index, 0]
    gray = {"cmap": "gray"}
    if "score" in maps:  # ADNet
        score = F.interpolate(maps["score"][None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        t = float(maps["threshold"])
        limit = float(score.abs().max())
        kappa = model.config.sharpness
        return [{"title": "query", "image": query, **gray},
                {"title": f"anomaly score A (T = {t:.2f})", "image": score, "cmap": "RdBu_r", "vmin": -limit,
                 "vmax": limit, "contour": score < t},
                {"title": "prediction A < T", "image": (score < t).float(), **gray, "vmin": 0, "vmax": 1},
                {"title": "soft mask sigmoid(k(T - A))", "image": torch.sigmoid(kappa * (t - score)),
                 "cmap": "viridis", "vmin": 0, "vmax": 1}]
    grid = maps["grid"]
    support_size = episode.support_images.shape[-2:]
    probability = maps["logits"].softmax(dim=0)[1]  # [h, w]
    query_cell = int(probability.flatten().argmax())
    support_mask = episode.support_masks[index, 0]
    support_cell = int(F.adaptive_avg_pool2d(support_mask[None, None], grid).flatten().argmax())
    up = F.interpolate(probability[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    heat = {"cmap": "magma", "vmin": 0}
    return [{"title": "query", "image": query, **gray},
            {"title": "P(foreground), cell q (x)", "image": up, "cmap": "viridis", "vmin": 0, "vmax": 1,
             "point": _cell_centre(query_cell, grid, size)},
            {"title": "support, mask, cell s (x)", "image": episode.support_images[index, 0, 0], **gray,
             "contour": support_mask > 0.5, "point": _cell_centre(support_cell, grid, support_size)},
            {"title": "W_qs: q attends over support", "image": _grid_row(maps["query_to_support"][query_cell],
                                                                            grid, support_size),
             **heat, "contour": support_mask > 0.5},
            {"title": "W_sq: s attends over query", "image": _grid_row(maps["support_to_query"][support_cell],
                                                                          grid, size), **heat}]


def _panels_figure(model: torch.nn.Module, episode: Episode, out_path: str | os.PathLike, index: int,
                   dpi: int) -> dict:
    panels = model_panels(model, episode, index)
    figure = Figure(figsize=(len(panels) * PANEL_INCHES, PANEL_INCHES + 0.3), dpi=dpi)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        ax.imshow(panel["image"].numpy(), cmap=panel["cmap"], vmin=panel.get("vmin"), vmax=panel.get("vmax"))
        if panel.get("contour") is not None and panel["contour"].any():
            ax.contour(panel["contour"].float().numpy(), levels=[0.5], colors="red", linewidths=0.8)
        if panel.get("point") is not None:
            ax.plot(*panel["point"], marker="x", color="cyan", markersize=8)
        ax.set_title(panel["title"], fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(type(model).__name__, fontsize=9)
    figure.tight_layout()
    path = write_atomic(out_path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi), suffix=".png")
    width, height = figure.canvas.get_width_height()
    return {"path": str(Path(path)), "panels": len(panels), "columns": [p["title"] for p in panels],
            "width_px": width, "height_px": height,
            "description": f"{len(panels)} panels ({', '.join(p['title'] for p in panels)})"}


def explain_figure(model: torch.nn.Module, episode: Episode, out_path: str | os.PathLike, *, index: int = 0,
                   dpi: int = 100) -> dict:
    """Write the PNG of episode ``index`` to ``out_path`` (atomically) and describe it.

    ``model``: an unfolded model with a ``stages(episode)`` method (LMS-Net,
    fLMS-Net): the Fig. 7-style grid, ``{"path", "stages", "panels",
    "columns", "width_px", "height_px", "max_abs_v", "description"}`` with
    ``panels = 3 * stages``; or a model with ``explain_maps`` (APSCL, ADNet):
    one row of :func:`model_panels`, ``{"path", "panels", "columns",
    "width_px", "height_px", "description"}``. Raises
    :class:`~medfss.errors.ConfigError` for any other model.
    """
    if hasattr(model, "explain_maps"):
        return _panels_figure(model, episode, out_path, index, dpi)
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
            "columns": list(COLUMNS), "width_px": width, "height_px": height, "max_abs_v": v_limit,
            "description": f"{len(maps)} stages"}
