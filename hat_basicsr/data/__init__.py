"""Datasets, registered into basicsr's DATASET_REGISTRY on import, and the demo-data builder."""

from hat_basicsr.data import imagenet_paired_dataset  # noqa: F401
