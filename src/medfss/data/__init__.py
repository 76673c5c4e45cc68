"""Data: geometry-preserving NIfTI I/O, data set registry, folds, raw-release conversion (prepare),
superpixels, episodes."""
