"""Kill a training run with SIGKILL at a chosen step, resume it, and compare with an uninterrupted run.

A trial: a child process trains the tiny model (:mod:`medfss.reliability.toy`)
and prints ``<medfss step t>`` as each step starts; the parent SIGKILLs it a random
few milliseconds after step k's mark appears (so the kill lands anywhere in the
step, a checkpoint write included), then runs ``--resume auto`` to the end.
The trial survives when the losses the resumed run logs from its checkpoint
on, and its final weights, equal those of the uninterrupted reference bit
for bit. Every child uses the same thread count: on a CPU that count
changes the order of float sums.

Child entry point: ``python -m medfss.reliability.resume RUN_DIR --iterations N
--checkpoint-every K [--resume]``.
"""

from __future__ import annotations

import argparse
import csv
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfss.reliability import child_env

CHILD_THREADS = 1
MARK = "<medfss step {}>"  # what the child prints as each step starts
CHILD_TIMEOUT_S = 300


@dataclass(frozen=True)
class Trial:
    """The outcome of one kill point."""

    kill_step: int  # the step that had started when SIGKILL was sent
    resumed_from: int | None  # the first step the resumed run trained (None: it did not resume)
    steps_compared: int
    losses_equal: bool
    weights_equal: bool

    @property
    def survived(self) -> bool:
        return self.resumed_from is not None and self.steps_compared > 0 and self.losses_equal \
            and self.weights_equal


def child_command(run_dir: Path, iterations: int, checkpoint_every: int, resume: bool) -> list[str]:
    return [sys.executable, "-m", "medfss.reliability.resume", str(run_dir), "--iterations", str(iterations),
            "--checkpoint-every", str(checkpoint_every), *(["--resume"] if resume else [])]


def train_in_child(run_dir: Path, iterations: int, checkpoint_every: int, resume: bool = False) -> None:
    """Run the tiny training to the end in a child process (raises on a non-zero exit)."""
    done = subprocess.run(child_command(run_dir, iterations, checkpoint_every, resume),
                          env=child_env(CHILD_THREADS), capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"tiny training in {run_dir} exited {done.returncode}: {done.stderr[-2000:]}")


def kill_at_step(run_dir: Path, iterations: int, checkpoint_every: int, kill_step: int,
                 delay_s: float) -> bool:
    """Start the tiny training and SIGKILL it ``delay_s`` after step ``kill_step`` starts.

    Returns whether the kill landed (False: the run ended before it).
    """
    proc = subprocess.Popen(child_command(run_dir, iterations, checkpoint_every, False),
                            env=child_env(CHILD_THREADS), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if MARK.format(kill_step) in line:  # the progress bar shares stdout: find the mark in any line
                time.sleep(delay_s)
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.stdout.close()
        returncode = proc.wait(timeout=CHILD_TIMEOUT_S)
    return returncode == -signal.SIGKILL


def logged_losses(run_dir: Path, version: int | None = None) -> dict[int, str]:
    """``{step: loss}`` of one ``logs/csv/version_N/metrics.csv`` (default: the newest), as written."""
    versions = sorted((run_dir / "logs" / "csv").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    folder = versions[-1] if version is None else run_dir / "logs" / "csv" / f"version_{version}"
    with (folder / "metrics.csv").open() as fh:
        return {int(row["step"]): row["train/loss"] for row in csv.DictReader(fh) if row.get("train/loss")}


def same_weights(a: Path, b: Path) -> bool:
    """Whether two exported models hold bit-identical tensors under the same names."""
    import torch

    first, second = (torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in (a, b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def kill_resume_trial(reference: Path, run_dir: Path, iterations: int, checkpoint_every: int, kill_step: int,
                      delay_s: float) -> Trial:
    """Kill at ``kill_step``, resume, and compare with the finished ``reference`` run folder."""
    if not kill_at_step(run_dir, iterations, checkpoint_every, kill_step, delay_s):
        return Trial(kill_step, None, 0, False, False)
    train_in_child(run_dir, iterations, checkpoint_every, resume=True)
    resumed, whole = logged_losses(run_dir), logged_losses(reference)
    steps = sorted(resumed)
    return Trial(kill_step=kill_step, resumed_from=steps[0] if steps else None, steps_compared=len(steps),
                 losses_equal=bool(steps) and steps[-1] == iterations - 1
                 and all(resumed[s] == whole[s] for s in steps),
                 weights_equal=same_weights(run_dir / "model.pt", reference / "model.pt"))


def kill_resume_sweep(workdir: Path, kill_points: int, *, iterations: int = 24, checkpoint_every: int = 4,
                      seed: int = 0) -> list[Trial]:
    """``kill_points`` trials at distinct random steps in 1..iterations-4, against one reference run."""
    rng = np.random.default_rng(seed)
    reference = workdir / "reference"
    train_in_child(reference, iterations, checkpoint_every)
    steps = sorted(rng.choice(np.arange(1, iterations - 3), size=kill_points, replace=False).tolist())
    return [kill_resume_trial(reference, workdir / f"kill-{step}", iterations, checkpoint_every, int(step),
                              float(rng.uniform(0.0, 0.01))) for step in steps]


def _child(argv: list[str] | None = None) -> int:
    """Train the tiny model, printing :data:`MARK` as each step starts."""
    import lightning as L
    import torch

    from medfss.checkpoints import auto_resume
    from medfss.reliability.toy import SquareSampler, TinySegmenter, tiny_config
    from medfss.training.loop import train

    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--checkpoint-every", type=int, required=True)
    parser.add_argument("--resume", action="store_true", help="as medfss train --resume auto")
    args = parser.parse_args(argv)
    torch.set_num_threads(CHILD_THREADS)

    class Announce(L.Callback):
        def on_train_batch_start(self, trainer, *_):
            print(MARK.format(trainer.global_step), flush=True)

    config = tiny_config(iterations=args.iterations, checkpoint_every=args.checkpoint_every)
    torch.manual_seed(config.runtime.seed)
    train(config, args.run_dir, model=TinySegmenter(**config.model.options), sampler=SquareSampler(),
          resume=auto_resume(args.run_dir) if args.resume else None, callbacks=[Announce()])
    return 0


if __name__ == "__main__":
    sys.exit(_child())
