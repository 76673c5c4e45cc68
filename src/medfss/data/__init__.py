"""Data: geometry-preserving NIfTI I/O, data set registry, folds, intensity normalisation,
raw-release conversion (prepare), superpixels, episodes."""
