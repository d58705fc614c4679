"""Pair datasets of training views: the base classes, the readers of data on disk, mixtures."""

from .base import PairViewDataset, ViewDictPairDataset
from .co3d import Co3dDataset
from .mixture import MixtureDataset
from .scene_folder import SceneFolderDataset

__all__ = ["PairViewDataset", "ViewDictPairDataset", "MixtureDataset", "SceneFolderDataset", "Co3dDataset"]
