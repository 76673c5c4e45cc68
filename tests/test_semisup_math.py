"""The arithmetic of the semi-supervised mode: EMA, copy-paste, prototypes (eq. 1, 2, 5), losses (eq. 4, 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from medfss.semisup.copy_paste import bidirectional, paste, zero_box_mask
from medfss.semisup.losses import ce_dice, sigmoid_rampup, soft_dice_loss, total_loss
from medfss.semisup.mean_teacher import ema_factor, ema_update, make_teacher
from medfss.semisup.networks import build_network
from medfss.semisup.prototypes import MultiPrototypeClassifier, prototype_infonce


# --- Mean Teacher --------------------------------------------------------------------------------

def test_ema_factor_warms_up_then_caps_at_the_decay():
    assert ema_factor(0, 0.99) == 0.0
    assert ema_factor(1, 0.99) == pytest.approx(0.5)
    assert ema_factor(9, 0.99) == pytest.approx(0.9)
    assert ema_factor(10_000, 0.99) == 0.99


def test_ema_update_is_the_weighted_average_of_parameters_and_float_buffers():
    student = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    teacher = make_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
        student[1].running_mean.fill_(2.0)
        student[1].num_batches_tracked.fill_(7)
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, step=100, decay=0.9)  # a = min(1 - 1/101, 0.9) = 0.9
    for t, b, s in zip(teacher.parameters(), before, student.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)
    torch.testing.assert_close(teacher[1].running_mean, torch.full((2,), 0.2))
    assert int(teacher[1].num_batches_tracked) == 7


def test_ema_update_at_step_zero_copies_the_student():
    student, other = nn.Linear(4, 4), nn.Linear(4, 4)
    ema_update(other, student, step=0, decay=0.99)
    torch.testing.assert_close(other.weight, student.weight)


# --- copy-paste ----------------------------------------------------------------------------------

def test_zero_box_mask_has_one_box_of_zeros_of_the_requested_size():
    mask = zero_box_mask((16, 12), (5, 4), np.random.default_rng(0))
    assert mask.shape == (16, 12) and int((mask == 0).sum()) == 20
    rows, cols = torch.nonzero(mask == 0, as_tuple=True)
    assert rows.max() - rows.min() == 4 and cols.max() - cols.min() == 3
    with pytest.raises(ValueError):
        zero_box_mask((4, 4), (5, 4), np.random.default_rng(0))


def test_copy_paste_mixes_images_and_labels_with_the_same_box():
    rng = np.random.default_rng(1)
    image_a, image_b = torch.zeros(2, 1, 8, 8), torch.ones(2, 1, 8, 8)
    label_a, label_b = torch.full((2, 8, 8), 2), torch.full((2, 8, 8), 3)
    mask = zero_box_mask((8, 8), (3, 5), rng)
    mixed_image, mixed_label = paste(image_a, image_b, mask), paste(label_a, label_b, mask)
    assert mixed_label.dtype == torch.int64
    # wherever the image came from b, the label did too
    torch.testing.assert_close(mixed_image[:, 0] == 1, mixed_label == 3)
    assert int((mixed_label == 3).sum()) == 2 * 15


def test_copy_paste_is_its_own_inverse_on_the_mask():
    a, b = torch.randn(3, 1, 10, 9), torch.randn(3, 1, 10, 9)
    mask = zero_box_mask((10, 9), (4, 6), np.random.default_rng(2))
    torch.testing.assert_close(paste(paste(a, b, mask), paste(b, a, mask), mask), a)
    torch.testing.assert_close(paste(a, b, 1 - mask), paste(b, a, mask))


def test_bidirectional_pastes_labelled_into_unlabelled_and_back():
    labeled, unlabeled = torch.zeros(4, 6, 6, dtype=torch.long), torch.ones(4, 6, 6, dtype=torch.long)
    labeled[1], labeled[3] = 5, 7  # tell the halves apart
    mask = zero_box_mask((6, 6), (2, 2), np.random.default_rng(3))
    into_unlabeled, into_labeled = bidirectional(labeled, unlabeled, mask)
    inside = mask == 0
    assert (into_unlabeled[:, inside] == labeled[:2, inside]).all() and (into_unlabeled[:, ~inside] == 1).all()
    assert (into_labeled[:, ~inside] == labeled[2:, ~inside]).all() and (into_labeled[:, inside] == 1).all()


# --- prototypes ----------------------------------------------------------------------------------

def toy_classifier() -> MultiPrototypeClassifier:
    """2 classes x 2 prototypes on the axes of R^2 (class 0: +x, +y; class 1: -x, -y)."""
    classifier = MultiPrototypeClassifier(2, 2, 2, tau=0.1, momentum=0.5)
    classifier.prototypes.copy_(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]]))
    return classifier


def test_eq1_logits_are_the_best_cosine_per_class_over_tau():
    classifier = toy_classifier()
    z = torch.tensor([[3.0, 1.0], [-1.0, -2.0]]).T[None, :, :, None]  # [B=1, d=2, H=2, W=1]
    logits = classifier(z)  # [1, 2, 2, 1]
    v0, v1 = F.normalize(torch.tensor([3.0, 1.0]), dim=0), F.normalize(torch.tensor([-1.0, -2.0]), dim=0)
    expected = torch.tensor([[max(v0[0], v0[1]), max(-v0[0], -v0[1])],
                             [max(v1[0], v1[1]), max(-v1[0], -v1[1])]]) / 0.1
    torch.testing.assert_close(logits[0, :, :, 0].T, expected)
    assert logits.argmax(dim=1).flatten().tolist() == [0, 1]


def test_assignment_picks_the_closest_prototype_of_the_voxels_own_class():
    classifier = toy_classifier()
    z = torch.tensor([[2.0, 1.0], [1.0, 2.0], [2.0, 1.0]])
    assert classifier.assign(z, torch.tensor([0, 0, 1])).tolist() == [0, 1, 1]  # (2,1) in class 1: -y beats -x


def test_eq2_momentum_update_moves_each_assigned_prototype_towards_its_cluster_mean():
    classifier = toy_classifier()
    z = torch.tensor([[1.0, 0.2], [1.0, -0.2], [0.0, 5.0], [-3.0, 0.0]])
    labels, keep = torch.tensor([0, 0, 0, 1]), torch.tensor([True, True, False, True])
    classifier.momentum_update(z, labels, keep)
    mean = (F.normalize(z[0], dim=0) + F.normalize(z[1], dim=0)) / 2
    torch.testing.assert_close(classifier.prototypes[0, 0], F.normalize(0.5 * torch.tensor([1.0, 0.0]) + 0.5 * mean,
                                                                         dim=0))
    torch.testing.assert_close(classifier.prototypes[0, 1], torch.tensor([0.0, 1.0]))  # its voxel was not kept
    torch.testing.assert_close(classifier.prototypes[1, 0], torch.tensor([-1.0, 0.0]))  # mean equals it
    torch.testing.assert_close(classifier.prototypes[1, 1], torch.tensor([0.0, -1.0]))  # empty cluster
    torch.testing.assert_close(classifier.prototypes.norm(dim=-1), torch.ones(2, 2))


def test_kmeans_initialisation_finds_the_sub_centres_of_each_class():
    rng = np.random.default_rng(0)
    centres = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    z = torch.from_numpy(np.concatenate([centres[i] + 0.01 * rng.normal(size=(50, 3)) for i in range(3)])
                         .astype(np.float32))
    classifier = MultiPrototypeClassifier(2, 3, 3)
    classifier.initialise(torch.cat([z, -z]), torch.cat([torch.zeros(150), torch.ones(150)]).long())
    for c, sign in ((0, 1), (1, -1)):
        found = classifier.prototypes[c] * sign
        assert sorted(found.argmax(dim=1).tolist()) == [0, 1, 2]
        assert (found.max(dim=1).values > 0.99).all()


def test_eq5_infonce_matches_its_closed_form():
    classifier = toy_classifier()
    z, labels = torch.tensor([[2.0, 1.0]]), torch.tensor([0])
    v = F.normalize(z[0], dim=0)
    sims = torch.tensor([v[0], v[1], -v[0], -v[1]]) / 0.1
    expected = -(sims[0] - torch.logsumexp(sims, dim=0))  # positive: class 0's closest, +x
    torch.testing.assert_close(prototype_infonce(z, labels, classifier, tau=0.1), expected)
    assert prototype_infonce(z[:0], labels[:0], classifier, tau=0.1) == 0


# --- losses, ramp-up -----------------------------------------------------------------------------

def test_sigmoid_rampup_goes_from_exp_minus_5_to_1():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(100, 100) == sigmoid_rampup(500, 100) == 1.0
    values = [sigmoid_rampup(t, 100) for t in range(101)]
    assert values == sorted(values)


def test_dice_loss_is_zero_for_a_perfect_prediction_and_ce_dice_adds_ce():
    target = torch.randint(0, 3, (2, 5, 5))
    perfect = 100.0 * F.one_hot(target, 3).movedim(-1, 1).float()
    assert float(soft_dice_loss(perfect, target)) == pytest.approx(0.0, abs=1e-5)
    logits = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(ce_dice(logits, target), F.cross_entropy(logits, target)
                               + soft_dice_loss(logits, target))


def test_eq6_total_loss():
    one, two, three = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)
    assert float(total_loss(one, two, three, ramp=0.5, gamma=0.1)) == pytest.approx(1 + 0.5 * (2 + 0.3))


# --- networks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dims,channels,shape", [(2, (4, 8, 16), (2, 1, 16, 16)), (3, (4,), (2, 1, 16, 16, 16))])
def test_networks_give_an_embedding_and_logits_of_the_input_size_and_every_parameter_a_gradient(dims, channels,
                                                                                                 shape):
    torch.manual_seed(0)  # dropout: a seed where no embedding channel is dropped everywhere
    net = build_network(dims, channels=channels, num_classes=3)
    z, logits = net.embed_and_classify(torch.randn(shape))
    assert z.shape == (shape[0], channels[0], *shape[2:]) and logits.shape == (shape[0], 3, *shape[2:])
    logits.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
