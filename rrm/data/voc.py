"""PASCAL VOC 2012 reader (also reads the embedded synthetic dataset, which uses the
same layout).

Layout under ``root``::

    JPEGImages/<name>.jpg
    SegmentationClass/<name>.png       palette PNGs, 255 = boundary/ignore (optional)
    SegmentationClassAug/<name>.png    index or palette PNGs (optional)
    ImageSets/Segmentation/{train,train_aug,val}.txt
    cls_labels.npy                     dict name -> 20-vector, as PSA/RRM ship it (optional)

Image-level labels come from ``cls_labels.npy`` or are derived from the masks.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from rrm.data.transforms import IGNORE_INDEX, EvalTransform

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
NUM_CLASSES = len(VOC_CLASSES)  # foreground classes; masks use 0 = background, 1..20

IMAGE_DIR = "JPEGImages"
MASK_DIRS = ("SegmentationClass", "SegmentationClassAug")
LIST_DIR = os.path.join("ImageSets", "Segmentation")
CLS_LABELS_FILE = "cls_labels.npy"

Transform = Callable[[np.ndarray, "np.ndarray | None", np.random.Generator], dict]


class DatasetError(RuntimeError):
    """A dataset folder, list or file is missing, unreadable or inconsistent."""


def voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map: uint8 ``[256, 3]``; entry ``i`` is the colour of index ``i``
    (0 black, 1 dark red, ..., 255 the cream colour of boundaries)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[index] = (red, green, blue)
    return palette


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H, W, 3]``; :class:`DatasetError` if it is
    missing or cannot be decoded."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"cannot read image {path}: {error}") from error


def read_mask(path: str | os.PathLike, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Read a segmentation mask as uint8 class indices ``[H, W]`` (255 = ignore).

    Accepts palette PNGs (VOC ``SegmentationClass``), single-channel index PNGs
    (``SegmentationClassAug``) and RGB PNGs drawn in the VOC colours. Raises
    :class:`DatasetError` naming the path if the file is missing, unreadable or holds values
    other than ``0..num_classes`` and 255.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"mask file not found: {path}")
    try:
        with Image.open(path) as image:
            if image.mode in ("P", "L"):
                mask = np.asarray(image)
            elif image.mode in ("RGB", "RGBA"):
                mask = _colours_to_indices(np.asarray(image.convert("RGB")), path)
            else:  # 16/32-bit index images
                mask = np.asarray(image).astype(np.int64)
    except (OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"cannot read mask {path}: {error}") from error
    invalid = (mask > num_classes) & (mask != IGNORE_INDEX)
    if invalid.any() or (mask < 0).any():
        bad = sorted(set(np.unique(mask[invalid | (mask < 0)]).tolist()))[:5]
        raise DatasetError(
            f"mask {path} holds values {bad}; expected 0..{num_classes} and {IGNORE_INDEX}"
        )
    return mask.astype(np.uint8)


def _colours_to_indices(rgb: np.ndarray, path: Path) -> np.ndarray:
    palette = voc_palette().astype(np.int64)
    codes = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    lookup = {int(code): index for index, code in enumerate(codes[:256])}
    pixels = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    unique, inverse = np.unique(pixels, return_inverse=True)
    unknown = [int(code) for code in unique if int(code) not in lookup]
    if unknown:
        colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in unknown[:5]]
        raise DatasetError(f"mask {path} has colours outside the VOC palette: {colours}")
    return np.asarray([lookup[int(code)] for code in unique], dtype=np.uint8)[inverse].reshape(rgb.shape[:2])


def write_mask(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write uint8 class indices ``[H, W]`` as a VOC palette PNG."""
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(voc_palette().reshape(-1).tolist())
    image.save(path)


def labels_from_mask(mask: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Image-level labels of a mask: float32 ``[num_classes]``, 1 for every foreground
    class (mask value 1..num_classes) that occurs; background and 255 are not classes."""
    present = np.unique(mask)
    present = present[(present >= 1) & (present <= num_classes)]
    labels = np.zeros(num_classes, dtype=np.float32)
    labels[present.astype(np.int64) - 1] = 1.0
    return labels


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a ``cls_labels.npy`` is a pickle,
    and refusing every other global keeps loading one from elsewhere safe."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle hook
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_cls_labels(path: str | os.PathLike, num_classes: int = NUM_CLASSES) -> dict[str, np.ndarray]:
    """Load a PSA/RRM ``cls_labels.npy`` (a pickled dict name -> ``[num_classes]`` vector).

    Returns a dict of float32 ``[num_classes]`` arrays. Only numpy arrays and plain
    containers are unpickled. Raises :class:`DatasetError` naming the path if the file is
    missing, unreadable or not such a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"class-label file not found: {path}")
    try:
        with open(path, "rb") as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(stream)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(stream)
            if dtype.hasobject:
                content = _NumpyOnlyUnpickler(stream, encoding="latin1").load()
            else:
                raise ValueError("expected a pickled dict (object array), found a plain array")
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise DatasetError(f"cannot read class labels {path}: {error}") from error
    if isinstance(content, np.ndarray) and content.shape == ():
        content = content.item()
    if not isinstance(content, dict):
        raise DatasetError(f"class labels {path} hold a {type(content).__name__}, expected a dict")
    labels = {}
    for name, vector in content.items():
        key = name.decode() if isinstance(name, bytes) else str(name)
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape != (num_classes,):
            raise DatasetError(
                f"class labels {path}: entry {key!r} has {vector.size} values, expected {num_classes}"
            )
        labels[key] = vector
    return labels


def save_cls_labels(path: str | os.PathLike, labels: Mapping[str, np.ndarray]) -> None:
    """Write ``labels`` (name -> ``[num_classes]`` vector) as PSA's ``cls_labels.npy``."""
    content = {name: np.asarray(vector, dtype=np.float32) for name, vector in labels.items()}
    with open(path, "wb") as stream:
        np.save(stream, content, allow_pickle=True)


def read_image_list(path: str | os.PathLike) -> list[str]:
    """Read an image list. Each line's first field names an image, either as a bare name
    (``2007_000032``) or as a path (``/JPEGImages/2007_000032.jpg ...``, as the train_aug lists
    of some repositories have it)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image list not found: {path}")
    names = []
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            fields = line.split()
            if fields:
                token = fields[0]
                is_path = "/" in token or token.lower().endswith((".jpg", ".jpeg", ".png"))
                names.append(Path(token).stem if is_path else token)
    return names


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
        self.root = Path(root)
        self.transform = transform if transform is not None else EvalTransform()
        self.num_classes = num_classes
        self.seed = seed
        self.epoch = 0

        if not self.root.is_dir():
            raise DatasetError(f"dataset root does not exist or is not a folder: {self.root}")
        image_dir = self.root / IMAGE_DIR
        if not image_dir.is_dir():
            raise DatasetError(f"image folder missing: {image_dir}")

        self.list_path = self._resolve_list(split)
        self.names = read_image_list(self.list_path)
        for name in self.names:
            image_path = image_dir / f"{name}.jpg"
            if not image_path.is_file():
                raise DatasetError(
                    f"image list {self.list_path} names {name!r} but {image_path} does not exist"
                )

        self.mask_paths = self._find_masks(mask_source) if mask_dir is None else self._masks_in(Path(mask_dir))
        if label_source not in ("auto", "npy", "masks"):
            raise ValueError(f"label_source must be 'auto', 'npy' or 'masks', got {label_source!r}")
        labels_path = Path(cls_labels_path) if cls_labels_path is not None else self.root / CLS_LABELS_FILE
        if label_source == "auto":
            label_source = "npy" if labels_path.is_file() else "masks"
        self.label_source = label_source

        needs_masks = require_masks or label_source == "masks"
        if needs_masks:
            for name, mask_path in zip(self.names, self.mask_paths):
                if mask_path is None:
                    reason = "labels are derived from masks" if label_source == "masks" else "masks are required"
                    raise DatasetError(
                        f"no mask for {name!r} in {self._mask_dirs_text(mask_source)} ({reason})"
                    )

        self._cls_labels: list[np.ndarray] | None = None
        if label_source == "npy":
            table = load_cls_labels(labels_path, num_classes)
            missing = [name for name in self.names if name not in table]
            if missing:
                raise DatasetError(
                    f"class labels {labels_path} have no entry for {len(missing)} listed images "
                    f"(first: {missing[0]!r}); pass label_source='masks' to derive them from masks"
                )
            self._cls_labels = [table[name] for name in self.names]

    def _resolve_list(self, split: str) -> Path:
        candidate = Path(split)
        if candidate.suffix == ".txt" or len(candidate.parts) > 1:
            if not candidate.is_file():
                raise DatasetError(f"image list not found: {candidate}")
            return candidate
        list_dir = self.root / LIST_DIR
        if not list_dir.is_dir():
            raise DatasetError(f"image-list folder missing: {list_dir}")
        path = list_dir / f"{split}.txt"
        if not path.is_file():
            available = sorted(p.stem for p in list_dir.glob("*.txt"))
            raise DatasetError(f"image list not found: {path} (available: {available})")
        return path

    def _find_masks(self, mask_source: str) -> list[Path | None]:
        if mask_source == "none":
            return [None] * len(self.names)
        if mask_source == "auto":
            folders = [self.root / folder for folder in MASK_DIRS if (self.root / folder).is_dir()]
        elif mask_source in MASK_DIRS:
            folder = self.root / mask_source
            if not folder.is_dir():
                raise DatasetError(f"mask folder missing: {folder}")
            folders = [folder]
        else:
            raise ValueError(f"mask_source must be 'auto', 'none' or one of {MASK_DIRS}, got {mask_source!r}")
        paths: list[Path | None] = []
        for name in self.names:
            found = None
            for folder in folders:
                candidate = folder / f"{name}.png"
                if candidate.is_file():
                    found = candidate
                    break
            paths.append(found)
        return paths

    def _masks_in(self, folder: Path) -> list[Path | None]:
        if not folder.is_dir():
            raise DatasetError(f"mask folder missing: {folder}")
        paths = [folder / f"{name}.png" for name in self.names]
        missing = [path.name for path in paths if not path.is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} of {len(paths)} masks missing from {folder} (first: {missing[0]})")
        return paths

    def _mask_dirs_text(self, mask_source: str) -> str:
        folders = MASK_DIRS if mask_source in ("auto", "none") else (mask_source,)
        return " or ".join(str(self.root / folder) for folder in folders)

    def __len__(self) -> int:
        return len(self.names)

    def set_epoch(self, epoch: int) -> None:
        """Select the random augmentations of an epoch (see the class docstring)."""
        self.epoch = epoch

    def image_path(self, index: int) -> Path:
        return self.root / IMAGE_DIR / f"{self.names[index]}.jpg"

    def mask_path(self, index: int) -> Path | None:
        return self.mask_paths[index]

    def read_mask(self, index: int) -> np.ndarray | None:
        """The full-size mask of sample ``index`` (uint8 ``[H, W]``) or None."""
        path = self.mask_paths[index]
        return None if path is None else read_mask(path, self.num_classes)

    def image_labels(self, index: int) -> np.ndarray:
        """Image-level labels of sample ``index``: float32 ``[num_classes]``."""
        if self._cls_labels is not None:
            return self._cls_labels[index].copy()
        return labels_from_mask(self.read_mask(index), self.num_classes)

    def __getitem__(self, index: int) -> dict:
        image = read_image(self.image_path(index))
        mask = self.read_mask(index)
        if mask is not None and mask.shape != image.shape[:2]:
            raise DatasetError(
                f"mask {self.mask_paths[index]} is {mask.shape[1]}x{mask.shape[0]} but image "
                f"{self.image_path(index)} is {image.shape[1]}x{image.shape[0]}"
            )
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
