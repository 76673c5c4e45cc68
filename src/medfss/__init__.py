"""medfss: few-shot medical image segmentation toolkit."""

__version__ = "0.1.0"

from medfss.scan_segmentation import segment  # noqa: E402  (the public API; imports its heavy modules lazily)

__all__ = ["__version__", "segment"]
