"""The bundled default model: the checkpoint ``medfss segment`` and ``medfss demo`` use when given none.

It is produced by ``scripts/default_model.sh`` (see :mod:`medfss.weights.bundle`)
and described by its model card beside it (``alpnet_chaost2.md``): what it
was trained on, how, by which command at which revision, and its protocol Dice.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).with_name("alpnet_chaost2.pt")
MODEL_CARD = DEFAULT_MODEL.with_suffix(".md")
