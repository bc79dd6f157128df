"""Datasets: the VOC2012 reader, RRM's transforms and the embedded synthetic dataset.

``ensure_synthetic_dataset`` and ``generate_synthetic_dataset`` live in
:mod:`rrm.data.synthetic`; they are re-exported lazily so that
``python -m rrm.data.synthetic`` does not import its own module twice.
"""

from rrm.data.transforms import (
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    TrainTransform,
    normalize_image,
)
from rrm.data.voc import (
    NUM_CLASSES,
    VOC_CLASSES,
    DatasetError,
    VOCSegmentation,
    labels_from_mask,
    load_cls_labels,
    read_image,
    read_image_list,
    read_mask,
    save_cls_labels,
    voc_palette,
    write_mask,
)

_SYNTHETIC_EXPORTS = ("ensure_synthetic_dataset", "generate_synthetic_dataset")

__all__ = [
    "IGNORE_INDEX", "IMAGENET_MEAN", "IMAGENET_STD", "NUM_CLASSES", "VOC_CLASSES",
    "DatasetError", "EvalTransform", "TrainTransform", "VOCSegmentation",
    "labels_from_mask", "load_cls_labels", "normalize_image", "read_image", "read_image_list",
    "read_mask", "save_cls_labels", "voc_palette", "write_mask", *_SYNTHETIC_EXPORTS,
]


def __getattr__(name: str):
    if name in _SYNTHETIC_EXPORTS:
        from rrm.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module 'rrm.data' has no attribute {name!r}")
