"""The command line: output on good input, one-line errors and exit 2 on bad input."""

from __future__ import annotations

import pytest

from medfss.cli import main


@pytest.mark.realdata
def test_data_summary_lists_every_volume_with_class_ranges(data_root, capsys):
    assert main(["data", "summary", "CMR", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "CMR (MR)" in out and "35 volumes" in out
    assert "LV-MYO [1-11], LV-BP [1-11], RV [4-11]" in out  # case 1, checked by hand


@pytest.mark.parametrize("argv, message", [
    (["data", "summary", "NOPE"], "unknown data set 'NOPE'"),
    (["data", "summary", "CHAOST2", "--data-root", "/nonexistent"], "data set folder not found"),
])
def test_user_mistakes_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
