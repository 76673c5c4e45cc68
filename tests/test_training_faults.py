"""Training under faults: corrupt checkpoints, non-finite losses, SIGINT/SIGTERM, bitwise reproducibility.

In-process runs of the tiny model (:mod:`medfss.reliability.toy`); the
SIGKILL/resume sweep in child processes is in test_reliability.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal

import lightning as L
import pytest
import torch

from medfss.checkpoints import PREVIOUS_CHECKPOINT, read_checkpoint
from medfss.cli import main
from medfss.errors import InputFileError, TrainingError, TrainingInterrupted
from medfss.reliability.resume import logged_losses
from medfss.reliability.toy import SquareSampler, TinySegmenter, tiny_config
from medfss.training.loop import train

from test_training import run


def with_iterations(config, iterations: int):
    return dataclasses.replace(config, optim=dataclasses.replace(config.optim, iterations=iterations))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for name, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[name], value), name


def test_two_fresh_trainings_give_bit_identical_weights(tmp_path):
    config = tiny_config(iterations=5, checkpoint_every=5)
    first, second = run(config, tmp_path / "a"), run(config, tmp_path / "b")
    assert_same_weights(first, second)
    assert [loss for _, loss in first.seen] == [loss for _, loss in second.seen]
    checkpoint = read_checkpoint(tmp_path / "a" / "checkpoints" / "last.ckpt")
    assert checkpoint["torch_version"] == str(torch.__version__)
    assert checkpoint["torch_threads"] == torch.get_num_threads()


def test_a_corrupt_newest_checkpoint_resumes_from_the_previous_one_with_a_warning(tmp_path, caplog):
    config = tiny_config(iterations=6, checkpoint_every=3)
    whole = run(config, tmp_path / "whole")
    run(with_iterations(config, 5), tmp_path / "split")  # checkpoints at steps 3 and 5
    checkpoints = tmp_path / "split" / "checkpoints"
    last, previous = checkpoints / "last.ckpt", checkpoints / PREVIOUS_CHECKPOINT
    assert read_checkpoint(previous)["global_step"] == 3 and read_checkpoint(last)["global_step"] == 5
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a copy cut short
    with caplog.at_level(logging.WARNING, logger="medfss.checkpoints"):
        resumed = run(config, tmp_path / "split", resume=last)
    assert f"{last}: not a readable checkpoint" in caplog.text and str(previous) in caplog.text
    assert len(resumed.seen) == 3  # steps 3, 4, 5 again
    assert_same_weights(whole, resumed)


def test_resume_names_both_files_when_neither_checkpoint_is_readable(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / "last.ckpt").write_bytes(b"\0" * 100)
    (checkpoints / PREVIOUS_CHECKPOINT).write_bytes(b"garbage")
    with pytest.raises(InputFileError, match=r"cannot resume: .*last\.ckpt.*previous\.ckpt"):
        run(tiny_config(), tmp_path, resume=checkpoints / "last.ckpt")


class BreaksAt(TinySegmenter):
    """At one step, its loss terms become ``break_terms(model, terms)``."""

    def __init__(self, step: int, break_terms):
        super().__init__()
        self.step, self.break_terms = step, break_terms

    def loss(self, episode):
        terms = super().loss(episode)
        return self.break_terms(self, terms) if len(self.seen) - 1 == self.step else terms


def diverges_at(step: int) -> BreaksAt:
    """The loss becomes NaN at ``step``."""
    return BreaksAt(step, lambda model, t: {**t, "loss": t["loss"] * float("nan"), "ce": t["ce"] * float("nan")})


def gradient_breaks_at(step: int) -> BreaksAt:
    """A finite loss whose gradient is NaN at ``step``: d/du of 0 * sqrt(u) at u = 0."""
    return BreaksAt(step, lambda model, t: {
        **t, "loss": t["loss"] + 0 * torch.sqrt(model.scale - model.scale.detach())})


def test_a_non_finite_loss_stops_training_naming_step_and_terms_and_keeps_the_last_checkpoint(tmp_path):
    config = tiny_config(iterations=10, checkpoint_every=2)
    torch.manual_seed(0)
    model = diverges_at(step=5)
    with pytest.raises(TrainingError, match=r"step 5: the loss is not finite \(loss=nan, ce=nan, scale=\S+\); "
                                            r"training stopped and the last good checkpoint is .*last\.ckpt"):
        train(config, tmp_path, model=model, sampler=SquareSampler())
    kept = read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert kept["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the NaN step never reached the weights
    assert not (tmp_path / "model.pt").exists()


def test_a_non_finite_gradient_stops_training_before_the_optimiser_step(tmp_path):
    torch.manual_seed(0)
    model = gradient_breaks_at(step=2)
    with pytest.raises(TrainingError, match=r"step 2: the gradient norm is nan with a finite loss"):
        train(tiny_config(iterations=4, checkpoint_every=2), tmp_path, model=model, sampler=SquareSampler())
    assert all(torch.isfinite(p).all() for p in model.parameters())


class SignalAt(L.Callback):
    """Sends ``signum`` to this process as step ``step`` starts."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, signum):
    config = tiny_config(iterations=6, checkpoint_every=5)
    whole = run(config, tmp_path / "whole")
    torch.manual_seed(config.runtime.seed)
    before = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted, match=rf"stopped by {signum.name} at step 3 of 6; checkpoint saved to "
                                                  r".*last\.ckpt; to continue: medfss train --config .*config\.yaml "
                                                  r"--run-dir .* --resume auto") as info:
        train(config, tmp_path / "split", model=TinySegmenter(), sampler=SquareSampler(),
              callbacks=[SignalAt(2, signum)])
    assert info.value.exit_status == 128 + signum
    assert signal.getsignal(signum) == before  # the handlers are put back
    assert read_checkpoint(tmp_path / "split" / "checkpoints" / "last.ckpt")["global_step"] == 3
    assert not (tmp_path / "split" / "model.pt").exists()
    resumed = run(config, tmp_path / "split", resume=tmp_path / "split" / "checkpoints" / "last.ckpt")
    assert_same_weights(whole, resumed)
    assert sorted(logged_losses(tmp_path / "split")) == [3, 4, 5]  # the resumed run's log starts at its checkpoint


def test_the_cli_exits_with_the_signal_status_and_one_line(monkeypatch, capsys, tmp_path):
    def interrupted(*args, **kwargs):
        raise TrainingInterrupted("training stopped by SIGTERM at step 3 of 6; ...", signal.SIGTERM)

    monkeypatch.setattr("medfss.training.loop.train", interrupted)
    config = tmp_path / "c.yaml"
    config.write_text("model: {name: alpnet}\n")
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 143
    assert capsys.readouterr().err.strip().splitlines() == [
        "medfss: error: training stopped by SIGTERM at step 3 of 6; ..."]

