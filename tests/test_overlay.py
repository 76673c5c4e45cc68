"""Overlays (medfss.overlay): names in the legend, ground truth drawn, radiological whatever the voxel order."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medfss.overlay import OKABE_ITO, label_style, overlay_figure, radiological, render_overlay, side_letters

AFFINE = np.diag([1.5, 1.5, 5.0, 1.0])  # RAS+


def scan() -> tuple[np.ndarray, np.ndarray]:
    """(image, labels) [X, Y, Z] in RAS order: organ 1 on the patient's right and front, organ 2 behind it."""
    image = np.zeros((32, 28, 8), np.float32)
    image[4:28, 4:24] = 100.0
    labels = np.zeros(image.shape, np.uint8)
    labels[18:26, 14:22, 2:6] = 1  # large x: right; large y: anterior
    labels[8:14, 6:10, 3:5] = 2
    image[labels > 0] += 100.0 * labels[labels > 0]
    return image, labels


def as_las(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same scan stored LAS (axis 0 reversed), with the affine that keeps every voxel in place."""
    ornt = np.array([[0, -1], [1, 1], [2, 1]], float)
    return np.ascontiguousarray(array[::-1]), AFFINE @ nib.orientations.inv_ornt_aff(ornt, array.shape)


def test_radiological_puts_the_patients_right_and_front_at_the_top_left():
    section = np.zeros((5, 4))  # [x (R), y (A)] of an axial slice
    section[-1, -1] = 1  # the most right and most anterior voxel
    shown = radiological(section)
    assert shown.shape == (4, 5) and shown[0, 0] == 1
    assert side_letters(2) == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert side_letters(1) == {"left": "R", "right": "L", "top": "S", "bottom": "I"}


def test_an_las_and_an_ras_copy_of_one_scan_are_drawn_the_same():
    image, labels = scan()
    names = {1: "liver", 2: "spleen"}
    ras = render_overlay(image, labels, AFFINE, 2, names, truth=labels)
    las_image, las_affine = as_las(image)
    las_labels, _ = as_las(labels)
    las = render_overlay(las_image, las_labels, las_affine, 2, names, truth=las_labels)
    np.testing.assert_array_equal(las, ras)
    # the test can fail: the LAS arrays drawn as if they were RAS give another picture
    assert not np.array_equal(render_overlay(las_image, las_labels, AFFINE, 2, names, truth=las_labels), ras)


def test_the_legend_carries_the_names_and_the_truth_gets_its_own_row():
    image, labels = scan()
    fig = overlay_figure(image, labels, AFFINE, 2, {1: "liver", 2: "spleen"}, truth=labels)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["liver", "spleen"]
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("prediction") for t in titles) and any(t.startswith("ground truth") for t in titles)
    assert len(overlay_figure(image, labels, AFFINE, 2, {1: "liver"}).axes) * 2 == len(fig.axes)


def test_colours_are_okabe_ito_then_line_styles():
    assert [label_style(i)[0] for i in range(7)] == list(OKABE_ITO)
    assert label_style(0) != label_style(7) and label_style(7)[0] == OKABE_ITO[0]


@pytest.mark.parametrize("n", [1, 3])
def test_slices_are_picked_where_labels_are(n):
    image, labels = scan()
    fig = overlay_figure(image, labels, AFFINE, 2, {1: "liver", 2: "spleen"}, n_slices=n)
    slices = [int(ax.get_title().rsplit(" ", 1)[1]) for ax in fig.axes]
    assert len(slices) == n and all(2 <= z <= 5 for z in slices)
