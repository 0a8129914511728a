"""Data layer: MMRec files, masks, the new-item protocol, imputation, the synthetic set, BPR sampling."""

from graphrec.data.dataset import RecDataset, build_dataset, load_dataset
from graphrec.data.interactions import Interactions, read_inter, write_inter
from graphrec.data.masks import MissingModalities, generate_missing, load_mask_file, save_mask_file
from graphrec.data.sampler import BPRSampler

__all__ = [
    "BPRSampler",
    "Interactions",
    "MissingModalities",
    "RecDataset",
    "build_dataset",
    "generate_missing",
    "load_dataset",
    "load_mask_file",
    "read_inter",
    "save_mask_file",
    "write_inter",
]
