"""Per-volume description of a data set (``medfss data summary``)."""

from __future__ import annotations

from medfss.data.datasets import Dataset, Volume


def describe_volume(volume: Volume, class_names: dict[int, str]) -> dict:
    """Slices, spacing and, per class present, its first and last slice."""
    ranges = {}
    for index, name in class_names.items():
        slices = volume.class_slices(index)
        if slices.size:
            ranges[name] = (int(slices[0]), int(slices[-1]))
    return {
        "case_id": volume.case_id,
        "shape": tuple(int(s) for s in volume.image.shape),
        "spacing": tuple(round(s, 3) for s in volume.spacing),
        "classes": ranges,
    }


def format_summary(dataset: Dataset, rows: list[dict]) -> str:
    lines = [f"{dataset.spec.name} ({dataset.spec.modality}) at {dataset.root}: {len(rows)} volumes",
             f"{'case':>10}  {'shape':>15}  {'spacing (mm)':>20}  classes [first-last slice]"]
    for row in rows:
        classes = ", ".join(f"{name} [{lo}-{hi}]" for name, (lo, hi) in row["classes"].items()) or "none"
        shape = "x".join(map(str, row["shape"]))
        spacing = "x".join(f"{s:g}" for s in row["spacing"])
        lines.append(f"{row['case_id']:>10}  {shape:>15}  {spacing:>20}  {classes}")
    return "\n".join(lines)
