"""What a VOC-layout dataset holds, checked: per split, the number of images, how many have
a mask in each mask folder, where the image-level labels come from and how many images
carry each class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rrm.data.layout import LIST_DIR, MASK_DIRS, VOC_CLASSES, check_root
from rrm.data.voc import VOCSegmentation
from rrm.utils.errors import DatasetError

DEFAULT_SPLITS = ("train", "train_aug", "val")


def check_dataset(root: str | Path, splits: Sequence[str] = DEFAULT_SPLITS, deep: bool = False) -> str:
    """Validate ``root`` and return a human-readable report.

    Splits whose list file is absent are reported as such; at least one must exist.
    ``deep`` also decodes every image and mask and checks their sizes. Raises
    :class:`~rrm.utils.errors.DatasetError` on the first problem found.
    """
    root = check_root(root)
    lines = [f"dataset: {root}"]
    found_any = False
    for split in splits:
        list_path = root / LIST_DIR / f"{split}.txt"
        if list_path.is_file():
            found_any = True
            lines += _split_report(VOCSegmentation(root, split), split, deep)
        else:
            lines.append(f"{split}: no list ({list_path})")
    if not found_any:
        raise DatasetError(f"no image list of {list(splits)} under {root / LIST_DIR}")
    if deep:
        lines.append("all images and masks decoded")
    return "\n".join(lines)


def _split_report(dataset: VOCSegmentation, split: str, deep: bool) -> list[str]:
    with_mask = {folder: 0 for folder in MASK_DIRS}
    for path in dataset.mask_paths:
        if path is not None:
            with_mask[path.parent.name] += 1
    labels = [dataset.image_labels(i) for i in range(len(dataset))]
    if deep:
        for index in range(len(dataset)):
            dataset.read_sample(index)
    per_class = np.stack(labels).sum(axis=0).astype(int) if labels else np.zeros(len(VOC_CLASSES), dtype=int)
    masks_text = ", ".join(f"{count} in {folder}" for folder, count in with_mask.items())
    class_text = ", ".join(f"{name} {count}" for name, count in zip(VOC_CLASSES, per_class) if count)
    return [
        f"{split}: {len(dataset)} images; masks: {masks_text}; labels from {dataset.label_source}",
        f"  images per class: {class_text or 'none'}",
    ]
