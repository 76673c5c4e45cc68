"""Data: geometry-preserving NIfTI I/O, data set registry, folds, superpixels, episodes."""
