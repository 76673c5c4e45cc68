"""medfss: few-shot medical image segmentation toolkit."""

__version__ = "0.1.0"
