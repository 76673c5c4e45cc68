"""APSCL, one module per part of the paper's method: fem (eq. 1-2), interaction (eq. 3-6),
contrastive (eq. 7-8), decoder (eq. 9-12) and the model with its loss (eq. 13)."""

from medfss.models.apscl.model import APSCL, APSCLConfig

__all__ = ["APSCL", "APSCLConfig"]
