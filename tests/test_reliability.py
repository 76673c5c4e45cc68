"""Reliability: hostile inputs (fuzz), SIGKILL and resume, pickle payloads, concurrent runs.

The default suite runs small versions; ``-m slow`` runs the full fuzz sweep
(1,200 inputs in process, 24 through the CLI) and six kill points.
``python -m medfss.reliability`` runs the full versions and writes
results/reliability/results.json.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from medfss.cli import main
from medfss.errors import InputFileError
from medfss.reliability import child_env
from medfss.reliability.fuzz import (cli_inputs, cli_outcome, format_table, fuzz_in_child, outcome_table,
                                     run_input)
from medfss.reliability.hostile import H5_DEFECTS, H5_LAYOUTS, TARGETS, hdf5_input, payload_checkpoint
from medfss.reliability.resume import child_command, kill_resume_sweep, same_weights
from medfss.reliability.toy import tiny_config
from medfss.training.loop import train


def check_fuzz(tmp_path, count: int, cli_count: int, seed: int) -> None:
    outcomes = fuzz_in_child(count, seed, tmp_path / "fuzz")
    cli = []
    for index, case in enumerate(cli_inputs(cli_count, seed)):
        (tmp_path / "cli" / str(index)).mkdir(parents=True)
        cli.append(cli_outcome(case, tmp_path / "cli" / str(index)))
    print(f"\nfuzz: tried {len(outcomes)} inputs in process and {len(cli)} through the CLI")
    print(format_table(outcome_table(outcomes + cli)))
    failures = [o for o in outcomes + cli if o.failed]
    assert not failures, "\n".join(f"{o.target}/{o.kind} {o.detail}: {o.status} {o.message}" for o in failures)
    statuses = Counter(o.status for o in outcomes)
    assert statuses["refused"] and statuses["ok"]  # both hostile and harmless defects were drawn
    assert {o.target for o in outcomes} == set(TARGETS)
    assert all(o.status == "refused" for o in outcomes if o.kind == "ckpt-pickle-payload")


def test_fuzz_gives_one_line_errors_or_correct_results(tmp_path):
    check_fuzz(tmp_path, count=150, cli_count=2, seed=0)


@pytest.mark.slow
def test_fuzz_full_sweep(tmp_path):
    check_fuzz(tmp_path, count=1200, cli_count=24, seed=1)


@pytest.mark.parametrize("layout", H5_LAYOUTS, ids=lambda layout: Path(layout.list_file).name)
def test_every_hostile_hdf5_kind_gives_a_one_line_error_or_a_correct_result(tmp_path, layout):
    """Four draws of every HDF5 defect through read_list and load_slices / load_volumes (fuzz.run_input)."""
    outcomes = []
    for index, defect in enumerate(list(H5_DEFECTS.values()) * 4):
        (tmp_path / str(index)).mkdir()
        outcomes.append(run_input(hdf5_input(np.random.default_rng([7, index]), layout, defect), tmp_path / str(index)))
    failures = [o for o in outcomes if o.failed]
    assert not failures, "\n".join(f"{o.kind} {o.detail}: {o.status} {o.message}" for o in failures)
    assert {o.kind for o in outcomes} == set(H5_DEFECTS)
    never_readable = ("truncated", "not-hdf5", "missing-array", "shape-mismatch")
    assert all(o.status == "refused" for o in outcomes if o.kind in never_readable)


def test_hdf5_volumes_through_medfss_evaluate_give_scores_or_one_line(tmp_path):
    acdc_volume = H5_LAYOUTS[1]
    valid = hdf5_input(np.random.default_rng(0), acdc_volume, lambda rng, image, label, layout: ("none", "", {}))
    (tmp_path / "valid").mkdir()
    assert cli_outcome(valid, tmp_path / "valid").status == "ok"
    assert (tmp_path / "valid" / "out" / "results.json").is_file()
    mismatch = hdf5_input(np.random.default_rng(0), acdc_volume, H5_DEFECTS["shape-mismatch"])
    (tmp_path / "mismatch").mkdir()
    outcome = cli_outcome(mismatch, tmp_path / "mismatch")
    assert outcome.status == "refused" and "patient001_frame01.h5: " in outcome.message, outcome
    assert not (tmp_path / "mismatch" / "out").exists()


def test_training_killed_with_sigkill_resumes_to_the_same_losses_and_weights(tmp_path):
    (trial,) = kill_resume_sweep(tmp_path, 1, iterations=10, checkpoint_every=3, seed=0)
    assert trial.resumed_from is not None and trial.resumed_from <= trial.kill_step
    assert trial.survived, trial


@pytest.mark.slow
def test_kill_resume_sweep(tmp_path):
    trials = kill_resume_sweep(tmp_path, 6, seed=1)
    print(f"\nkill/resume: {sum(t.survived for t in trials)} of {len(trials)} kill points survived")
    assert all(t.survived for t in trials), trials


@pytest.fixture
def payload(tmp_path):
    """A model file whose unpickling creates ``marker``; proven live by loading it unsafely once."""
    marker = tmp_path / "payload-ran"
    path = payload_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)  # what an unsafe loader would do
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_a_pickle_payload_is_refused_on_resume_and_never_runs(payload, tmp_path):
    path, marker = payload
    with pytest.raises(InputFileError, match=r"evil\.pt: not a readable checkpoint \(it holds Python objects "
                                             r"beyond tensors .*GLOBAL \S*open\).*could run code, so it is refused"):
        train(tiny_config(), tmp_path / "run", resume=path)
    assert not marker.exists()


def run_cli(argv, capsys) -> tuple[int, list[str]]:
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err.strip().splitlines()


def test_a_pickle_payload_is_refused_by_segment_evaluate_and_explain(payload, data_root, tmp_path, capsys):
    path, marker = payload
    chaos = data_root / "CHAOST2"
    scan, mask = chaos / "image_1.nii.gz", chaos / "label_1.nii.gz"
    commands = {
        "segment": ["segment", "--query", scan, "--support-image", scan, "--support-mask", mask, "--label", 1,
                    "--checkpoint", path, "--out", tmp_path / "out" / "pred.nii.gz", "--quiet"],
        "evaluate": ["evaluate", "--model", "alpnet", "--checkpoint", path, "--dataset", "CHAOST2",
                     "--data-root", data_root, "--folds", 0, "--classes", "liver", "--out", tmp_path / "eval",
                     "--quiet"],
        "explain": ["explain", "--checkpoint", path, "--dataset", "CHAOST2", "--data-root", data_root,
                    "--class", "liver", "--support-case", 1, "--query-case", 2, "--out", tmp_path / "x.png"],
    }
    for name, argv in commands.items():
        status, err = run_cli(argv, capsys)
        errors = [line for line in err if line.startswith("medfss: error:")]
        assert status == 2, name
        assert len(errors) == 1 and "evil.pt: not a readable checkpoint" in errors[0], (name, err)
        assert not any("Traceback" in line for line in err), name
        assert not marker.exists(), name
    assert not (tmp_path / "out").exists() and not (tmp_path / "eval").exists()


def test_concurrent_trainings_in_different_folders_do_not_interfere(tmp_path):
    """Two runs at once, started in one working folder, give the weights of a run alone; nothing else is written."""
    work = tmp_path / "cwd"
    work.mkdir()

    def start(name):
        return subprocess.Popen(child_command(tmp_path / name, 6, 3, False), env=child_env(), cwd=work,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    alone = start("alone")
    assert alone.wait(timeout=300) == 0, alone.stderr.read()
    together = [start("a"), start("b")]
    for proc in together:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
        proc.stderr.close()
    alone.stderr.close()
    assert same_weights(tmp_path / "a" / "model.pt", tmp_path / "alone" / "model.pt")
    assert same_weights(tmp_path / "b" / "model.pt", tmp_path / "alone" / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "alone", "b", "cwd"]
    assert not any(work.iterdir())  # no logs or caches in the working folder
