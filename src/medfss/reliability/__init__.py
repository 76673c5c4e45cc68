"""Reliability checks: what the tests and ``python -m medfss.reliability`` measure.

* :mod:`~medfss.reliability.toy`: a tiny model and episode sampler, so a
  training run of dozens of steps takes seconds on a CPU;
* :mod:`~medfss.reliability.resume`: train, SIGKILL at a chosen step, resume,
  and compare the loss curve and the weights with an uninterrupted run;
* :mod:`~medfss.reliability.fuzz`: seeded hostile inputs (NIfTI, DICOM,
  checkpoints, HDF5 data sets) driven through the public readers, ``segment``
  and the CLI;
* ``python -m medfss.reliability`` runs them all and writes
  ``results/reliability/results.json``.
"""

from __future__ import annotations

import os
from pathlib import Path


def child_env(threads: int = 1) -> dict[str, str]:
    """The environment of a checking child process: these sources first on the path, ``threads`` threads.

    The sources of this checkout come first so that a child runs the code
    under test, whether or not (and wherever) medfss is installed.
    """
    src = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads)}
