"""The training loop: schedule, learning, exact resumption, checkpoints, export, DDP.

Everything runs on a tiny prototype model and a synthetic "bright square"
episode sampler (:mod:`medfss.reliability.toy`), so a run of dozens of steps
takes seconds on a CPU.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import medfss
from medfss.checkpoints import export_model, load_model, read_checkpoint
from medfss.config import OptimConfig, TrainConfig, config_to_dict, load_config
from medfss.errors import ConfigError, InputFileError
from medfss.reliability import child_env
from medfss.reliability.toy import SIZE, SquareSampler, TinySegmenter, build_tiny, tiny_config
from medfss.training.loop import resume_conflicts, train
from medfss.training.schedule import build_optimizer
from medfss.training.stream import StepEpisodes

TESTS_DIR = Path(__file__).resolve().parent


def run(config: TrainConfig, run_dir: Path, resume: Path | None = None) -> TinySegmenter:
    """Train a fresh TinySegmenter (initialised from the config's seed) and return it."""
    torch.manual_seed(config.runtime.seed)
    model = TinySegmenter(**config.model.options)
    train(config, run_dir, resume=resume, model=model, sampler=SquareSampler())
    return model


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    (path,) = (run_dir / "logs" / "csv").glob("version_*/metrics.csv")
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 40-step run (lr halved every 10 steps), shared by the tests that only read its outputs."""
    config = tiny_config(iterations=40, checkpoint_every=15, lr_gamma=0.5, lr_step=10)
    run_dir = tmp_path_factory.mktemp("trained")
    return config, run_dir, run(config, run_dir)


# --- schedule and stream ---------------------------------------------------------------


def test_lr_schedule_is_step_decay_per_iteration():
    optim = OptimConfig(lr=1e-3, lr_gamma=0.98, lr_step=1000)
    optimizer, scheduler = build_optimizer([nn.Parameter(torch.zeros(1))], optim)
    lrs = []
    for _ in range(2501):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    for iteration in (0, 999, 1000, 2500):
        assert lrs[iteration] == pytest.approx(1e-3 * 0.98 ** (iteration // 1000), rel=1e-12), iteration
    assert lrs[999] > lrs[1000] > lrs[2000]


def take(episodes: StepEpisodes, workers: int, n: int) -> list[tuple[int, torch.Tensor]]:
    """The first ``n`` (step, query images) pairs through a DataLoader with ``workers`` workers."""
    loader = DataLoader(episodes, batch_size=None, num_workers=workers)
    return [(step, episode.query_images) for (step, episode), _ in zip(loader, range(n))]


def test_stream_batches_depend_on_step_and_rank_only():
    def stream(**kwargs):
        return StepEpisodes(SquareSampler(), batch_size=2, seed=7, **kwargs)

    serial = take(stream(), 0, 6)
    two_workers = take(stream(), 2, 6)
    resumed = take(stream(start_step=3), 2, 3)
    other_rank = take(stream(rank=1), 0, 6)
    assert [s for s, _ in serial] == list(range(6)) == [s for s, _ in two_workers]
    assert [s for s, _ in resumed] == [3, 4, 5]
    assert serial[0][1].shape == (2, 1, SIZE, SIZE)
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(serial, two_workers))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(serial[3:], resumed))
    assert not any(torch.equal(a, b) for (_, a), (_, b) in zip(serial, other_rank))
    assert not torch.equal(serial[0][1], serial[1][1])


# --- training ----------------------------------------------------------------------------


def test_training_reduces_the_loss_and_logs_every_term(trained):
    config, run_dir, model = trained
    losses = [loss for _, loss in model.seen]
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8]), losses
    rows = [r for r in read_metrics(run_dir) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == list(range(40))
    assert {"train/loss", "train/ce", "train/scale", "loss", "lr-SGD"} <= set(rows[0])
    lrs = [float(r["lr-SGD"]) for r in read_metrics(run_dir) if r.get("lr-SGD")]
    assert lrs == pytest.approx([0.05 * 0.5 ** (step // 10) for step in range(40)])
    assert load_config(run_dir / "config.yaml") == config
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt", "previous.ckpt"]


def test_training_record_keeps_wall_and_cpu_time(trained):
    _, run_dir, _ = trained
    record = json.loads((run_dir / "training.json").read_text())
    (session,) = record["sessions"]
    assert record["iterations"] == session["iterations_at_end"] == 40
    assert record["wall_time_s"] == session["wall_time_s"] > 0 and session["cpu_time_s"] > 0


@pytest.mark.parametrize("grad_clip", [None, 1e-3])
def test_grad_norm_is_logged_before_clipping_and_clipping_bounds_the_step(tmp_path, grad_clip):
    """Plain SGD moves the weights by lr * |g|, and by lr * grad_clip once |g| is clipped to grad_clip."""
    config = tiny_config(iterations=1, checkpoint_every=1, momentum=0.0, weight_decay=0.0, grad_clip=grad_clip)
    torch.manual_seed(config.runtime.seed)
    before = torch.cat([p.detach().flatten() for p in TinySegmenter().parameters()])
    after = torch.cat([p.detach().flatten() for p in run(config, tmp_path).parameters()])
    (logged,) = [float(r["train/grad_norm"]) for r in read_metrics(tmp_path) if r.get("train/grad_norm")]
    moved = float((after - before).norm()) / config.optim.lr
    assert logged > 1e-2  # so that 1e-3 does clip
    assert moved == pytest.approx(logged if grad_clip is None else grad_clip, rel=1e-3)  # float32 weight differences


def test_grad_clip_reads_a_positive_number_or_null_and_refuses_the_rest():
    preset = TESTS_DIR.parent / "configs" / "alpnet_cpu.yaml"
    assert load_config(preset).optim.grad_clip is None
    assert load_config(preset, ["optim.grad_clip=5"]).optim.grad_clip == 5.0
    assert load_config(preset, ["optim.grad_clip=null"]).optim.grad_clip is None
    for bad in ("0", "-1", "yes"):
        with pytest.raises(ConfigError, match="optim.grad_clip must be"):
            load_config(preset, [f"optim.grad_clip={bad}"])


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    config = tiny_config(iterations=6, checkpoint_every=3)
    whole = run(config, tmp_path / "whole")
    first = run(dataclasses.replace(config, optim=dataclasses.replace(config.optim, iterations=3)),
                tmp_path / "split")
    second = run(config, tmp_path / "split", resume=tmp_path / "split" / "checkpoints" / "last.ckpt")
    assert len(whole.seen) == 6 and len(first.seen) == 3 and len(second.seen) == 3
    for (a_query, a_loss), (b_query, b_loss) in zip(whole.seen, first.seen + second.seen):
        assert a_query == b_query  # the same episodes
        assert a_loss == pytest.approx(b_loss, rel=1e-6, abs=1e-7)  # from the same weights and dropout
    assert whole.seen[3][1] != whole.seen[2][1]
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(second.state_dict()[name], value, rtol=1e-6, atol=1e-7)


def test_resume_refuses_a_config_that_changes_the_run(tmp_path, trained):
    config, run_dir, _ = trained
    changed = dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=0.1, iterations=50),
                                  runtime=dataclasses.replace(config.runtime, num_workers=2))
    assert resume_conflicts(config, changed) == ["optim.lr"]
    with pytest.raises(ConfigError, match=r"cannot resume.*optim\.lr"):
        run(changed, tmp_path, resume=run_dir / "checkpoints" / "last.ckpt")


# --- checkpoints and export ----------------------------------------------------------------


def test_checkpoint_loads_weights_only_with_config_and_version(trained):
    config, run_dir, _ = trained
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 40
    assert checkpoint["config"] == config_to_dict(config)
    assert checkpoint["medfss_version"] == medfss.__version__
    assert checkpoint["model_name"] == "tiny"
    assert checkpoint["slice_orientation"] == "LAS"
    assert checkpoint["optimizer_states"] and checkpoint["lr_schedulers"]


def test_export_and_load_model_give_the_trained_model(trained, tmp_path):
    config, run_dir, model = trained
    exported = torch.load(run_dir / "model.pt", weights_only=True)
    assert set(exported) == {"state_dict", "config", "medfss_version", "model_name", "slice_orientation",
                             "torch_version", "torch_threads"}
    assert exported["torch_version"] == torch.__version__ and exported["torch_threads"] == torch.get_num_threads()
    assert exported["slice_orientation"] == "LAS"
    assert set(exported["state_dict"]) == set(model.state_dict())
    episode = SquareSampler().sample(np.random.default_rng(0))
    expected = model.eval()(episode)
    for path in (run_dir / "model.pt", run_dir / "checkpoints" / "last.ckpt",
                 export_model(run_dir / "model.pt", tmp_path / "again.pt")):
        loaded, loaded_config = load_model(path, build=build_tiny)
        assert loaded_config == config and not loaded.training
        torch.testing.assert_close(loaded(episode), expected)


def _rewrite(data: dict, path: Path) -> Path:
    torch.save(data, path)
    return path


def test_load_model_rejects_bad_files_with_a_clear_error(trained, tmp_path):
    _, run_dir, _ = trained
    good = torch.load(run_dir / "model.pt", weights_only=True)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((run_dir / "model.pt").read_bytes()[:200])
    (tmp_path / "pickled.pt").write_bytes(pickle.dumps(SquareSampler(), protocol=2))
    newer = _rewrite({**good, "medfss_version": "99.0"}, tmp_path / "newer.pt")
    no_config = _rewrite({k: v for k, v in good.items() if k != "config"}, tmp_path / "no_config.pt")
    other_model = _rewrite({**good, "config": {**good["config"], "model": {"name": "tiny", "options": {"channels": 4}}}},
                           tmp_path / "other_model.pt")
    nan_weights = _rewrite({**good, "state_dict": {k: torch.full_like(v, float("nan"))
                                                   for k, v in good["state_dict"].items()}}, tmp_path / "nan.pt")
    cases = {
        tmp_path / "missing.pt": "checkpoint not found",
        nan_weights: r"5 weight tensors hold NaN or Inf \(first: \w+\): the training diverged",
        tmp_path / "garbage.pt": "not a readable checkpoint",
        truncated: "not a readable checkpoint",
        tmp_path / "pickled.pt": "not a readable checkpoint",
        newer: "newer than the installed",
        no_config: "missing config",
        other_model: "weights do not fit the 'tiny' model",
    }
    for path, message in cases.items():
        with pytest.raises(InputFileError, match=message):
            load_model(path, build=build_tiny)
    bad_config = _rewrite({**good, "config": {**good["config"], "optim": {"lr": -1.0}}}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match=r"stored config is invalid.*optim\.lr"):
        load_model(bad_config, build=build_tiny)


def test_read_checkpoint_of_the_training_run_holds_model_weights(trained):
    _, run_dir, model = trained
    data = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert {k.removeprefix("model.") for k in data["state_dict"]} == set(model.state_dict())


# --- DDP -------------------------------------------------------------------------------------

DDP_SCRIPT = """
import json, os, sys
import torch
from medfss.reliability.toy import SquareSampler, TinySegmenter, tiny_config
from medfss.training.loop import train
from dataclasses import replace

config = tiny_config(iterations=3, checkpoint_every=2)
config = replace(config, runtime=replace(config.runtime, strategy="ddp", devices=2))
model = TinySegmenter()
train(config, {run_dir!r}, model=model, sampler=SquareSampler())
rank = int(os.environ.get("LOCAL_RANK", 0))
checksum = sum(float(p.double().sum()) for p in model.parameters())
with open(os.path.join({run_dir!r}, f"rank{{rank}}.json"), "w") as fh:
    json.dump({{"seen": model.seen, "checksum": checksum}}, fh)
"""


def test_ddp_on_cpu_two_ranks_see_different_episodes_and_stay_in_sync(tmp_path):
    script = tmp_path / "ddp_run.py"
    run_dir = tmp_path / "run"
    script.write_text(DDP_SCRIPT.format(run_dir=str(run_dir)))
    env = {**child_env(), "PL_DISABLE_FORK": "1"}  # this checkout's sources, one thread
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    queries = [[query for query, _ in rank["seen"]] for rank in ranks]
    assert len(queries[0]) == len(queries[1]) == 3
    assert not set(queries[0]) & set(queries[1])  # different episodes on each rank
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-6)  # gradients were averaged
    assert (run_dir / "model.pt").is_file() and (run_dir / "config.yaml").is_file()
