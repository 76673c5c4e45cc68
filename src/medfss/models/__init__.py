"""Few-shot segmentation models behind one contract (see :mod:`medfss.models.base`)."""
