"""Reading and writing a VOC-layout dataset's files: images, masks (palette, index or
VOC-coloured PNGs) and the image-level label table ``cls_labels.npy``."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from rrm.data.layout import NUM_CLASSES
from rrm.data.transforms import IGNORE_INDEX
from rrm.utils.errors import DatasetError


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


def check_same_size(first: np.ndarray, first_name: str, second: np.ndarray, second_name: str) -> None:
    """:class:`DatasetError` ``"<first_name> is WxH but <second_name> is WxH"`` unless the
    arrays (images ``[H, W, 3]`` or masks ``[H, W]``) have the same height and width."""
    if first.shape[:2] != second.shape[:2]:
        raise DatasetError(f"{first_name} is {_size(first)} but {second_name} is {_size(second)}")


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"


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
