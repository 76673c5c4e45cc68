"""Reliability checks: what the tests and ``python -m medfss.reliability`` measure.

* :mod:`~medfss.reliability.toy`: a tiny model and episode sampler, so a
  training run of dozens of steps takes seconds on a CPU;
* :mod:`~medfss.reliability.resume`: train, SIGKILL at a chosen step, resume,
  and compare the loss curve and the weights with an uninterrupted run;
* :mod:`~medfss.reliability.fuzz`: seeded hostile inputs (NIfTI, DICOM,
  checkpoints) driven through the public readers, ``segment`` and the CLI;
* ``python -m medfss.reliability`` runs them all and writes
  ``results/reliability/results.json``.
"""
