"""The PASCAL VOC 2012 folder layout (the embedded synthetic dataset uses it too): class
names, folder names, image lists and where each image's files are.

Layout under ``root``::

    JPEGImages/<name>.jpg
    SegmentationClass/<name>.png       palette PNGs, 255 = boundary/ignore (optional)
    SegmentationClassAug/<name>.png    index or palette PNGs (optional)
    ImageSets/Segmentation/{train,train_aug,val}.txt
    cls_labels.npy                     dict name -> 20-vector, as PSA/RRM ship it (optional)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from rrm.utils.errors import DatasetError

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
SHOWN_NAMES = 5  # names quoted in a message about missing files


def first_names(items: Sequence[object]) -> str:
    """``"first: a, b, c, d, e ..."``: the first :data:`SHOWN_NAMES` items, for messages."""
    shown = ", ".join(str(item) for item in items[:SHOWN_NAMES])
    return f"first: {shown}{' ...' if len(items) > SHOWN_NAMES else ''}"


def check_root(root: str | os.PathLike) -> Path:
    """``root`` as a Path; :class:`DatasetError` if it is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root does not exist or is not a folder: {root}")
    return root


def image_list_path(root: str | os.PathLike, split: str) -> Path:
    """The list file of ``split``: a list name (``ImageSets/Segmentation/<split>.txt`` under
    ``root``) or the path of a list file. :class:`DatasetError` naming the path if it is
    missing (with the available list names)."""
    candidate = Path(split)
    if candidate.suffix == ".txt" or len(candidate.parts) > 1:
        if not candidate.is_file():
            raise DatasetError(f"image list not found: {candidate}")
        return candidate
    list_dir = Path(root) / LIST_DIR
    if not list_dir.is_dir():
        raise DatasetError(f"image-list folder missing: {list_dir}")
    path = list_dir / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in list_dir.glob("*.txt"))
        raise DatasetError(f"image list not found: {path} (available: {available})")
    return path


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


def split_names(root: str | os.PathLike, split: str) -> list[str]:
    """Image names of ``split`` of the dataset at ``root`` (see :func:`image_list_path`);
    :class:`DatasetError` if the root or the list is missing or the list is empty."""
    path = image_list_path(check_root(root), split)
    names = read_image_list(path)
    if not names:
        raise DatasetError(f"image list {path} names no images")
    return names


def image_paths(root: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """``root/JPEGImages/<name>.jpg`` for each name; :class:`DatasetError` naming the first
    missing files and their count if any does not exist."""
    paths = [Path(root) / IMAGE_DIR / f"{name}.jpg" for name in names]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(paths)} listed images do not exist ({first_names(missing)})")
    return paths


def find_masks(root: str | os.PathLike, names: Sequence[str], folders: Sequence[str] = MASK_DIRS) -> list[Path | None]:
    """Each image's mask: ``root/<folder>/<name>.png`` in the first of ``folders`` that has
    one, else None."""
    searched = [Path(root) / folder for folder in folders if (Path(root) / folder).is_dir()]
    found: list[Path | None] = []
    for name in names:
        candidates = (folder / f"{name}.png" for folder in searched)
        found.append(next((path for path in candidates if path.is_file()), None))
    return found


def files_in(folder: Path, names: Sequence[str], kind: str) -> list[Path]:
    """``folder/<name>.png`` for each name; :class:`DatasetError` ``"N of M <kind> missing
    from <folder> (first: ...)"`` if any does not exist."""
    paths = [folder / f"{name}.png" for name in names]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(paths)} {kind} missing from {folder} ({first_names(missing)})")
    return paths
