"""Semi-supervised segmentation (MPER): a few labelled and many unlabelled scans, fixed classes.

Not an episodic few-shot model: its own data layer (HDF5, labelled/unlabelled
split), two-stage trainer, evaluation on 3D volumes and fixed-class segment.
"""
