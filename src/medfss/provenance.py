"""Where a result came from: command, date, machine, code revision.

Every ``results.json`` and benchmark file carries this record, so a figure in
``results/`` can be traced to the command and the code that produced it.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch

from medfss import __version__


CODE_PATHS = ("src", "configs", "scripts", "pyproject.toml")


def git_revision(path: str | os.PathLike | None = None) -> str | None:
    """The checkout's commit, or None outside git.

    ``-dirty`` is appended when files that change what a command computes (the
    package, configs, scripts, pyproject) differ from the commit; edits to
    tests, docs or results do not count.
    """
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                *(f":(top){p}" for p in CODE_PATHS)], cwd=cwd,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def describe_machine() -> dict[str, object]:
    """CPU, core count, accelerator and library versions, in words a reader can compare."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "medfss": __version__,
    }


def provenance(argv: list[str] | None = None) -> dict[str, object]:
    """The record stored beside a result: command line, UTC date, machine and git revision."""
    argv = sys.argv if argv is None else argv
    return {
        "command": shlex.join(["medfss", *argv[1:]] if argv and argv[0].endswith("medfss") else argv),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": describe_machine(),
        "git_revision": git_revision(),
    }
