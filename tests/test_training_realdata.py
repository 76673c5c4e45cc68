"""The whole training path on real CHAOST2 slices: superpixels -> episodes -> ALPNet -> checkpoint."""

from __future__ import annotations

import csv
import dataclasses

import numpy as np
import pytest
import torch

from medfss.config import load_config
from medfss.data.datasets import Dataset
from medfss.data.episodes import Episode
from medfss.data.samplers import SelfSupervisedSampler
from medfss.data.superpixels import SuperpixelConfig, superpixels_for_volumes
from medfss.checkpoints import load_model
from medfss.models.registry import build_model_from_config
from medfss.training.loop import train
from medfss.training.schedule import build_optimizer

from conftest import REPO_ROOT

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def sampler(data_root, tmp_path_factory) -> SelfSupervisedSampler:
    """Self-supervised episodes at 64 x 64 from two fold-0 training volumes of CHAOST2."""
    dataset = Dataset.from_name("CHAOST2", data_root)
    volumes = [dataset.load(case_id) for case_id in ("8", "10")]
    superpixels = superpixels_for_volumes(volumes, SuperpixelConfig(), tmp_path_factory.mktemp("sp"),
                                          dataset="CHAOST2", progress=False)
    return SelfSupervisedSampler(volumes, superpixels, image_size=64)


def small_config(iterations: int, checkpoint_every: int = 100):
    return load_config(REPO_ROOT / "configs" / "alpnet_cpu.yaml", [
        "data.image_size=64", "optim.batch_size=2", f"optim.iterations={iterations}", "runtime.num_workers=0",
        f"runtime.checkpoint_every={checkpoint_every}", "runtime.log_every=1"])


def test_a_few_steps_on_real_episodes_reduce_the_loss(sampler):
    config = small_config(iterations=20)
    torch.manual_seed(0)
    model = build_model_from_config(config.model).train()
    optimizer, _ = build_optimizer(model.parameters(), config.optim)
    rng = np.random.default_rng(0)
    episodes = Episode.collate([sampler.sample(rng) for _ in range(4)])  # a fixed batch of real episodes
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = model.loss(episodes)["loss"]
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def _step_losses(run_dir) -> dict[int, float]:
    losses = {}
    for path in sorted((run_dir / "logs" / "csv").glob("version_*/metrics.csv")):
        with path.open() as fh:
            losses.update({int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(fh) if r.get("train/loss")})
    return losses


def test_resumed_alpnet_run_repeats_the_uninterrupted_one(sampler, tmp_path):
    config = small_config(iterations=4, checkpoint_every=2)
    train(config, tmp_path / "whole", sampler=sampler)
    half = dataclasses.replace(config, optim=dataclasses.replace(config.optim, iterations=2))
    train(half, tmp_path / "split", sampler=sampler)
    train(config, tmp_path / "split", sampler=sampler, resume=tmp_path / "split" / "checkpoints" / "last.ckpt")
    whole, split = _step_losses(tmp_path / "whole"), _step_losses(tmp_path / "split")
    assert sorted(whole) == sorted(split) == [0, 1, 2, 3]
    for step in range(4):  # steps 2 and 3 run after the resume
        assert split[step] == pytest.approx(whole[step], rel=1e-5)
    a, _ = load_model(tmp_path / "whole" / "model.pt")
    b, config_b = load_model(tmp_path / "split" / "model.pt")
    assert config_b.optim.iterations == 4
    for name, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[name], value, rtol=1e-5, atol=1e-6)
