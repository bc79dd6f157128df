"""The dataset of a VOC-layout folder (see :mod:`rrm.data.layout`; also the embedded
synthetic dataset). Image-level labels come from ``cls_labels.npy`` or are derived from the
masks."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rrm.data.files import check_same_size, labels_from_mask, load_cls_labels, read_image, read_mask
from rrm.data.layout import (
    CLS_LABELS_FILE,
    IMAGE_DIR,
    MASK_DIRS,
    NUM_CLASSES,
    check_root,
    files_in,
    find_masks,
    image_list_path,
    image_paths,
    read_image_list,
)
from rrm.data.transforms import EvalTransform
from rrm.utils.errors import DatasetError

Transform = Callable[[np.ndarray, "np.ndarray | None", np.random.Generator], dict]


class VOCSegmentation(Dataset):
    """A split of a VOC-layout dataset.

    Args:
        root: the VOC2012 folder (holding ``JPEGImages`` ...).
        split: a list name (``train``, ``train_aug``, ``val``: read from
            ``ImageSets/Segmentation/<split>.txt``) or the path of a list file.
        transform: ``(image, mask, rng) -> dict`` (see :mod:`rrm.data.transforms`);
            default :class:`~rrm.data.transforms.EvalTransform`.
        mask_source: ``"auto"`` (per image: ``SegmentationClass`` if it has the mask, else
            ``SegmentationClassAug``, else none), one of the two folder names, or ``"none"``.
        mask_dir: a folder of ``<name>.png`` masks to read instead of ``mask_source`` (e.g.
            the pseudo labels of step 2); every listed image must have one.
        label_source: ``"auto"`` (``cls_labels.npy`` if it exists, else the masks),
            ``"npy"`` or ``"masks"``.
        cls_labels_path: where ``cls_labels.npy`` is; default ``root/cls_labels.npy``.
        require_masks: fail at construction if any listed image has no mask.
        seed: base seed of the per-sample random generators.
        num_classes: number of foreground classes.

    Every listed image, and with ``require_masks`` or ``label_source="masks"`` every mask,
    is checked to exist at construction; problems raise :class:`DatasetError` naming the
    path.

    ``dataset[i]`` is a dict of tensors:

    - ``image`` float32 ``[3, h, w]`` normalised; ``image_uint8`` uint8 ``[3, h, w]``;
      ``roi`` float32 ``[h, w]``; ``mask`` int64 ``[h, w]`` (see the transform);
    - ``label`` float32 ``[num_classes]`` image-level labels;
    - ``has_mask`` bool scalar (the mask is all 255 when False, so batches always collate);
    - ``name`` str; ``index`` int.

    Randomness: sample ``i`` uses ``numpy.random.default_rng([seed, epoch, i])``, so it is
    the same in any worker and any process; call :meth:`set_epoch` before each epoch (with
    ``persistent_workers`` the workers keep the epoch they were started with).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        transform: Transform | None = None,
        mask_source: str = "auto",
        mask_dir: str | os.PathLike | None = None,
        label_source: str = "auto",
        cls_labels_path: str | os.PathLike | None = None,
        require_masks: bool = False,
        seed: int = 0,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        if label_source not in ("auto", "npy", "masks"):
            raise ValueError(f"label_source must be 'auto', 'npy' or 'masks', got {label_source!r}")
        self.root = check_root(root)
        self.transform = transform if transform is not None else EvalTransform()
        self.num_classes = num_classes
        self.seed = seed
        self.epoch = 0
        if not (self.root / IMAGE_DIR).is_dir():
            raise DatasetError(f"image folder missing: {self.root / IMAGE_DIR}")
        self.list_path = image_list_path(self.root, split)
        self.names = read_image_list(self.list_path)
        self._image_paths = image_paths(self.root, self.names)
        self.mask_paths = self._find_masks(mask_source) if mask_dir is None else self._masks_in(Path(mask_dir))
        labels_path = Path(cls_labels_path) if cls_labels_path is not None else self.root / CLS_LABELS_FILE
        if label_source == "auto":
            label_source = "npy" if labels_path.is_file() else "masks"
        self.label_source = label_source
        if require_masks or label_source == "masks":
            reason = "labels are derived from masks" if label_source == "masks" else "masks are required"
            self._check_every_mask(mask_source, reason)
        self._cls_labels = self._table_labels(labels_path) if label_source == "npy" else None

    def _find_masks(self, mask_source: str) -> list[Path | None]:
        if mask_source == "none":
            return [None] * len(self.names)
        if mask_source == "auto":
            return find_masks(self.root, self.names)
        if mask_source not in MASK_DIRS:
            raise ValueError(f"mask_source must be 'auto', 'none' or one of {MASK_DIRS}, got {mask_source!r}")
        if not (self.root / mask_source).is_dir():
            raise DatasetError(f"mask folder missing: {self.root / mask_source}")
        return find_masks(self.root, self.names, (mask_source,))

    def _masks_in(self, folder: Path) -> list[Path | None]:
        if not folder.is_dir():
            raise DatasetError(f"mask folder missing: {folder}")
        return list(files_in(folder, self.names, "masks"))

    def _check_every_mask(self, mask_source: str, reason: str) -> None:
        folders = MASK_DIRS if mask_source in ("auto", "none") else (mask_source,)
        for name, mask_path in zip(self.names, self.mask_paths):
            if mask_path is None:
                searched = " or ".join(str(self.root / folder) for folder in folders)
                raise DatasetError(f"no mask for {name!r} in {searched} ({reason})")

    def _table_labels(self, labels_path: Path) -> list[np.ndarray]:
        table = load_cls_labels(labels_path, self.num_classes)
        missing = [name for name in self.names if name not in table]
        if missing:
            raise DatasetError(
                f"class labels {labels_path} have no entry for {len(missing)} listed images "
                f"(first: {missing[0]!r}); pass label_source='masks' to derive them from masks"
            )
        return [table[name] for name in self.names]

    def __len__(self) -> int:
        return len(self.names)

    def set_epoch(self, epoch: int) -> None:
        """Select the random augmentations of an epoch (see the class docstring)."""
        self.epoch = epoch

    def image_path(self, index: int) -> Path:
        return self._image_paths[index]

    def mask_path(self, index: int) -> Path | None:
        return self.mask_paths[index]

    def read_mask(self, index: int) -> np.ndarray | None:
        """The full-size mask of sample ``index`` (uint8 ``[H, W]``) or None."""
        path = self.mask_paths[index]
        return None if path is None else read_mask(path, self.num_classes)

    def read_sample(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The image (uint8 ``[H, W, 3]``) and mask (uint8 ``[H, W]`` or None) of sample
        ``index``, decoded and checked to be of the same size."""
        image = read_image(self.image_path(index))
        mask = self.read_mask(index)
        if mask is not None:
            check_same_size(mask, f"mask {self.mask_path(index)}", image, f"image {self.image_path(index)}")
        return image, mask

    def image_labels(self, index: int) -> np.ndarray:
        """Image-level labels of sample ``index``: float32 ``[num_classes]``."""
        if self._cls_labels is not None:
            return self._cls_labels[index].copy()
        return labels_from_mask(self.read_mask(index), self.num_classes)

    def __getitem__(self, index: int) -> dict:
        image, mask = self.read_sample(index)
        if self._cls_labels is not None:
            labels = self._cls_labels[index].copy()
        else:
            labels = labels_from_mask(mask, self.num_classes)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sample = {key: torch.from_numpy(value) for key, value in self.transform(image, mask, rng).items()}
        sample["label"] = torch.from_numpy(labels)
        sample["has_mask"] = torch.tensor(mask is not None)
        sample["name"] = self.names[index]
        sample["index"] = index
        return sample
