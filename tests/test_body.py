"""The body mask (medfss.inference.body): constant scans refused, no label outside the patient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medfss.errors import InputFileError
from medfss.evaluation.protocol import ProtocolConfig
from medfss.inference import SupportScan, body_mask, check_informative, chunk_plan, predict_volume


def abdomen(depth: int = 6) -> np.ndarray:
    """[H, W, D]: an elliptic body (100) with an organ (250) in air (0); the last slice is all air."""
    yy, xx = np.mgrid[:40, :48]
    body = ((yy - 20) / 15) ** 2 + ((xx - 24) / 19) ** 2 <= 1
    organ = ((yy - 18) / 5) ** 2 + ((xx - 18) / 6) ** 2 <= 1
    image = np.repeat((100.0 * body + 150.0 * organ)[..., None], depth, axis=-1).astype(np.float32)
    image[..., -1] = 0.0
    return image


@pytest.mark.parametrize("value, message", [(0.0, "every voxel is 0 (an empty scan)"),
                                            (7.5, "every voxel equals 7.5 (a constant scan)")])
def test_constant_volumes_are_refused_with_one_line(value, message):
    with pytest.raises(InputFileError, match=r"scan\.nii\.gz: " + message.replace("(", r"\(").replace(")", r"\)")):
        check_informative(np.full((4, 4, 3), value, np.float32), "scan.nii.gz")
    check_informative(abdomen(), "fine.nii.gz")  # any contrast passes


def test_body_mask_is_the_patient_and_empty_on_an_air_slice():
    image = abdomen()
    body = body_mask(image)
    assert body.shape == image.shape and body.dtype == bool
    inside = image[..., 0] > 0
    assert body[..., 0][inside].all()  # the whole body and its organ
    assert not body[:3, :, 0].any() and not body[:, :2, 0].any()  # the air in the corners and at the sides
    assert not body[..., -1].any()  # a slice without a patient has no body
    # the same mask on the z-scored volume: the threshold is a fraction of the intensity range
    np.testing.assert_array_equal(body_mask((image - image.mean()) / image.std()), body)


class Everywhere:
    """A predictor that calls every pixel foreground: only the body rule can stop it."""

    def predict(self, support_images, support_masks, query_images):
        return torch.ones_like(query_images)


def test_prediction_never_leaves_the_body_mask():
    image = abdomen()
    label = np.zeros(image.shape, dtype=bool)
    label[13:23, 12:24, :] = True
    plan = chunk_plan([SupportScan(image, label)], (0, image.shape[-1] - 1), image.shape[:2])
    body = body_mask(image)
    free = predict_volume(Everywhere(), image, plan)
    assert free.min() == 1.0  # without the rule, air and the empty last slice would be labelled
    bound = predict_volume(Everywhere(), image, plan, body=body)
    np.testing.assert_array_equal(bound > 0.5, body)


def test_only_the_estimated_extent_applies_the_body_mask():
    assert ProtocolConfig(dataset="X", extent="estimated").body_mask
    assert not ProtocolConfig(dataset="X", extent="gt").body_mask  # the literature's protocol is unchanged
    assert ProtocolConfig(dataset="X", extent="estimated").to_dict()["body_mask"] is True
