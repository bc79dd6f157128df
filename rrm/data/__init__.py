"""Datasets: the VOC folder layout, its files, the VOC2012 reader, RRM's transforms and the
embedded synthetic dataset."""

from rrm.data.files import (
    check_same_size,
    labels_from_mask,
    load_cls_labels,
    read_image,
    read_mask,
    save_cls_labels,
    voc_palette,
    write_mask,
)
from rrm.data.layout import NUM_CLASSES, VOC_CLASSES, image_paths, read_image_list, split_names
from rrm.data.synthetic_dataset import data_root_of, embedded_dataset, ensure_synthetic_dataset, generate_synthetic_dataset
from rrm.data.transforms import (
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    normalize_image,
)
from rrm.data.voc import VOCSegmentation
from rrm.utils.errors import DatasetError

__all__ = [
    "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "NUM_CLASSES", "VOC_CLASSES",
    "DatasetError", "EvalTransform", "TrainTransform", "VOCSegmentation",
    "check_same_size", "data_root_of", "embedded_dataset", "ensure_synthetic_dataset", "generate_synthetic_dataset", "image_paths",
    "labels_from_mask", "load_cls_labels", "normalize_image", "read_image", "read_image_list",
    "read_mask", "save_cls_labels", "split_names", "voc_palette", "write_mask",
]
