"""The one inference path: slice plans, the batched volume loop, post-processing."""

from __future__ import annotations

import numpy as np
import pytest

from medfss.errors import ConfigError
from medfss.inference import (SupportScan, assign_query_chunks, chunk_plan, chunk_support_slices,
                              estimate_query_extent, estimated_extent, foreground, full_volume,
                              keep_largest_component, predict_volume)


@pytest.mark.parametrize("slices, n_chunks, expected", [
    (range(3, 12), 3, [4, 7, 10]),  # n = 9: positions 1, 4, 7
    (range(0, 18), 3, [3, 9, 15]),  # n = 18: SSL-ALPNet's float code gives 2 for the first
    ([2, 3, 5, 8], 3, [2, 5, 8]),  # a gap in the labels: positions 0, 2, 3 of the list
    ([6], 3, [6, 6, 6]),  # fewer slices than chunks repeat
])
def test_support_slice_of_each_chunk_is_its_middle(slices, n_chunks, expected):
    assert chunk_support_slices(slices, n_chunks) == expected


def test_query_chunks_are_equal_with_larger_ones_first():
    assert assign_query_chunks((5, 14), 3) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert assign_query_chunks((2, 7), 3) == [0, 0, 1, 1, 2, 2]
    assert assign_query_chunks((4, 5), 3) == [0, 1]


@pytest.mark.parametrize("extents, depths, query_range, expected", [
    ([(4, 9)], [20], (0, 30), (6, 14)),  # [0.2, 0.5) of 30 slices
    ([(0, 19)], [20], (0, 7), (0, 6)),  # the whole scan
    ([(5, 5)], [15], (0, 30), (10, 11)),  # exact thirds, no float round-off
    ([(4, 9), (2, 5)], [20, 10], (0, 30), (6, 17)),  # k-shot: the union
    ([(4, 9)], [20], (10, 40), (16, 24)),  # a query range shifts and scales it
])
def test_estimate_query_extent(extents, depths, query_range, expected):
    assert estimate_query_extent(extents, depths, query_range) == expected


def tagged_support(depth: int, extent: tuple[int, int], size: int = 8) -> SupportScan:
    """A box organ on slices extent[0]..extent[1]; every pixel of slice z holds z (an index tag)."""
    image = np.broadcast_to(np.arange(depth, dtype=np.float32), (size, size, depth)).copy()
    mask = np.zeros((size, size, depth), dtype=bool)
    mask[2:6, 2:6, extent[0]:extent[1] + 1] = True
    return SupportScan(image, mask)


def test_estimated_extent_maps_the_supports_labelled_slices():
    supports = [tagged_support(20, (4, 9)), tagged_support(10, (2, 5))]
    assert estimated_extent(supports, (0, 30)) == (6, 17)


def test_chunk_plan_pairs_every_query_slice_with_its_chunks_support_slice():
    support = tagged_support(14, (3, 11))  # support slices 4, 7, 10
    plan = chunk_plan([support], (4, 12), size=(16, 16))
    assert (plan.top, plan.bottom, plan.depth) == (4, 12, 9)
    assert plan.support_slices == ((4, 7, 10),)
    served = {int(z): float(g.support_images[0, 0, 0]) for g in plan.groups for z in g.query_slices}
    assert served == {4: 4, 5: 4, 6: 4, 7: 7, 8: 7, 9: 7, 10: 10, 11: 10, 12: 10}
    group = plan.groups[0]
    assert group.support_images.shape == group.support_masks.shape == (1, 16, 16)  # resized to the query
    assert set(group.support_masks.unique().tolist()) == {0.0, 1.0}


def test_chunk_plan_with_k_shots_stacks_one_slice_per_shot():
    plan = chunk_plan([tagged_support(14, (3, 11)), tagged_support(20, (0, 5))], (0, 5), size=(8, 8))
    assert plan.support_slices == ((4, 7, 10), (1, 3, 5))
    assert [g.support_images.shape[0] for g in plan.groups] == [2, 2, 2]


def test_chunk_plan_refuses_a_support_without_the_class():
    empty = SupportScan(np.zeros((8, 8, 5), np.float32), np.zeros((8, 8, 5), bool))
    with pytest.raises(ConfigError, match="does not contain the class"):
        chunk_plan([empty], (0, 3), size=(8, 8))


class QueryTag:
    """Predicts, on every pixel, the query slice's tag / 100: shows which slice landed where."""

    def __init__(self):
        self.batches = []

    def predict(self, support_images, support_masks, query_images):
        self.batches.append(query_images.shape[0])
        return query_images / 100


def test_predict_volume_batches_and_places_each_slice():
    query = np.broadcast_to(np.arange(30, dtype=np.float32), (8, 8, 30)).copy()  # slice z holds z
    plan = chunk_plan([tagged_support(14, (3, 11))], (5, 24), size=(8, 8))  # chunks of 7, 7, 6 slices
    predictor, calls = QueryTag(), []
    slab = predict_volume(predictor, query, plan, batch_size=4, progress=calls.append)
    assert slab.shape == (8, 8, 20) and slab.dtype == np.float32
    np.testing.assert_allclose(slab[0, 0], np.arange(5, 25) / 100, rtol=1e-6)
    assert predictor.batches == calls == [4, 3, 4, 3, 3, 3]


def test_predict_volume_rejects_a_predictor_of_the_wrong_shape():
    class Flat:
        def predict(self, support_images, support_masks, query_images):
            return query_images[:, 0]

    plan = chunk_plan([tagged_support(6, (1, 4))], (0, 2), size=(8, 8))
    with pytest.raises(ValueError, match=r"must return \[Q, H, W\]"):
        predict_volume(Flat(), np.zeros((8, 8, 3), np.float32), plan)


def test_largest_component_keeps_the_biggest_26_connected_blob():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:4, 1:4, 1:4] = True  # 27 voxels
    mask[6:8, 6:8, 6:8] = True  # 8 voxels
    mask[4, 4, 4] = True  # touches the first blob by a corner: 26-connected to it
    kept = keep_largest_component(mask)
    assert kept.sum() == 28 and kept[4, 4, 4] and not kept[6, 6, 6]
    assert not keep_largest_component(np.zeros((3, 3, 3), bool)).any()


def test_foreground_thresholds_then_optionally_cuts_to_the_largest_component():
    probabilities = np.zeros((6, 6, 4), np.float32)
    probabilities[0:2, 0:2, 0] = 0.9
    probabilities[4:6, 4:6, 2:4] = 0.7
    probabilities[3, 3, 3] = 0.5  # not above the threshold
    assert foreground(probabilities).sum() == 4 + 8
    assert foreground(probabilities, largest_component=True).sum() == 8
    assert foreground(probabilities, threshold=0.8).sum() == 4


def test_full_volume_puts_the_slab_on_its_slices():
    volume = full_volume(np.ones((4, 4, 3), bool), top=2, depth=7)
    assert volume.shape == (4, 4, 7)
    assert volume.any(axis=(0, 1)).tolist() == [False, False, True, True, True, False, False]


def test_evaluate_estimated_scores_what_segment_keeps(pair_dataset):
    """The protocol with estimated extents keeps the largest component, as ``medfss segment`` does."""
    from medfss.evaluation.protocol import ProtocolConfig, evaluate

    label = np.zeros((16, 16, 10), dtype=np.int64)
    label[3:9, 3:9, 2:8] = 1

    class TruthPlusSpeck:
        """The organ, and one false voxel far from it on every slice."""

        def predict(self, support_images, support_masks, query_images):
            out = (query_images > 0.5).float()
            out[:, 14, 14] = 1
            return out

    def dice(extent):
        config = ProtocolConfig(dataset="TOY", folds=(0,), extent=extent)
        result = evaluate(pair_dataset(label.astype(np.float32), label), lambda fold, name: TruthPlusSpeck(), config,
                          progress=False)
        return result.runs[0].queries[0].scores.dice

    assert dice("estimated") == pytest.approx(100)  # the specks are cut off
    assert dice("gt") < 100  # the literature's protocol scores the raw prediction
    assert ProtocolConfig(dataset="TOY", extent="estimated").to_dict()["largest_component"] is True
