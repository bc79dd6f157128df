"""Validate a VOC-layout dataset and print what it holds.

    python -m rrm.data.check ROOT [--splits train train_aug val] [--deep]

For each split whose list exists: the number of images, how many have a mask in each mask
folder, where the image-level labels come from and how many images carry each class.
``--deep`` also decodes every image and mask and checks their sizes and values (slow on
the full VOC). Exits with status 1 and a message naming the path on the first problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rrm.data.voc import (
    LIST_DIR,
    MASK_DIRS,
    VOC_CLASSES,
    DatasetError,
    VOCSegmentation,
    read_image,
)

DEFAULT_SPLITS = ("train", "train_aug", "val")


def check_dataset(root: str | Path, splits: Sequence[str] = DEFAULT_SPLITS, deep: bool = False) -> str:
    """Validate ``root`` and return a human-readable report.

    Splits whose list file is absent are reported as such; at least one must exist.
    Raises :class:`~rrm.data.voc.DatasetError` on the first problem found.
    """
    root = Path(root)
    lines = [f"dataset: {root}"]
    found_any = False
    for split in splits:
        if not (root / LIST_DIR / f"{split}.txt").is_file():
            if not root.is_dir():
                raise DatasetError(f"dataset root does not exist or is not a folder: {root}")
            lines.append(f"{split}: no list ({root / LIST_DIR / (split + '.txt')})")
            continue
        found_any = True
        dataset = VOCSegmentation(root, split)
        with_mask = {folder: 0 for folder in MASK_DIRS}
        for path in dataset.mask_paths:
            if path is not None:
                with_mask[path.parent.name] += 1
        labels = np.stack([dataset.image_labels(i) for i in range(len(dataset))]) if len(dataset) else np.zeros((0, len(VOC_CLASSES)))
        if deep:
            for index in range(len(dataset)):
                image = read_image(dataset.image_path(index))
                mask = dataset.read_mask(index)
                if mask is not None and mask.shape != image.shape[:2]:
                    raise DatasetError(
                        f"mask {dataset.mask_path(index)} is {mask.shape[1]}x{mask.shape[0]} but image "
                        f"{dataset.image_path(index)} is {image.shape[1]}x{image.shape[0]}"
                    )
        masks_text = ", ".join(f"{count} in {folder}" for folder, count in with_mask.items())
        lines.append(f"{split}: {len(dataset)} images; masks: {masks_text}; labels from {dataset.label_source}")
        per_class = labels.sum(axis=0).astype(int)
        class_text = ", ".join(f"{name} {count}" for name, count in zip(VOC_CLASSES, per_class) if count)
        lines.append(f"  images per class: {class_text or 'none'}")
    if not found_any:
        raise DatasetError(f"no image list of {list(splits)} under {root / LIST_DIR}")
    if deep:
        lines.append("all images and masks decoded")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rrm.data.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the VOC2012 folder (holding JPEGImages, ImageSets, ...)")
    parser.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS), help="list names to check")
    parser.add_argument("--deep", action="store_true", help="decode every image and mask")
    args = parser.parse_args(argv)
    try:
        print(check_dataset(args.root, args.splits, args.deep))
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
