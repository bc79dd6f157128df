"""The embedded synthetic dataset on disk: generated into a folder or into the cache on
first use (scenes: :mod:`rrm.data.synthetic_scenes`).

Masks (palette PNGs) are written for train and val, and image-level labels to
``cls_labels.npy``. The training layer reads image labels only; the train masks are there
to measure pseudo-label quality.

Generation is deterministic per seed: image ``i`` of a split is drawn from
``numpy.random.default_rng([seed, split_code, i])`` (so a larger ``n_train`` extends a
smaller one) and the files are byte-identical between runs with the same library versions.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from rrm.data.files import save_cls_labels, write_mask
from rrm.data.layout import CLS_LABELS_FILE, IMAGE_DIR, LIST_DIR, VOC_CLASSES
from rrm.data.synthetic_scenes import DEFAULT_SIZE, SYNTHETIC_CLASSES, render_scene
from rrm.utils.errors import DatasetError, InputError

SYNTHETIC_VERSION = 2
DEFAULT_N_TRAIN = 1500
DEFAULT_N_VAL = 100
DEFAULT_SEED = 0
METADATA_FILE = "synthetic.json"
SPLIT_CODES = {"train": 0, "val": 1}


def _image_name(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def _write_split(root: Path, split: str, count: int, size: int, seed: int, labels: dict) -> list[str]:
    names = []
    for index in range(count):
        scene = render_scene(np.random.default_rng([seed, SPLIT_CODES[split], index]), size)
        name = _image_name(split, index)
        Image.fromarray(scene.image).save(root / IMAGE_DIR / f"{name}.jpg", quality=90)
        write_mask(root / "SegmentationClass" / f"{name}.png", scene.mask)
        labels[name] = scene.labels
        names.append(name)
    return names


def _metadata(n_train: int, n_val: int, size: int, seed: int) -> dict:
    return {
        "version": SYNTHETIC_VERSION,
        "n_train": n_train,
        "n_val": n_val,
        "size": size,
        "seed": seed,
        "classes": {
            str(index): {"name": VOC_CLASSES[index - 1], "shape": shape, "texture": texture}
            for index, (shape, texture) in SYNTHETIC_CLASSES.items()
        },
    }


def _write_dataset(root: Path, n_train: int, n_val: int, size: int, seed: int) -> None:
    for folder in (IMAGE_DIR, "SegmentationClass", LIST_DIR):
        (root / folder).mkdir(parents=True, exist_ok=True)
    labels: dict[str, np.ndarray] = {}
    train = _write_split(root, "train", n_train, size, seed, labels)
    val = _write_split(root, "val", n_val, size, seed, labels)
    for list_name, names in (("train", train), ("train_aug", train), ("val", val)):
        (root / LIST_DIR / f"{list_name}.txt").write_text("".join(f"{n}\n" for n in names))
    save_cls_labels(root / CLS_LABELS_FILE, labels)
    (root / METADATA_FILE).write_text(json.dumps(_metadata(n_train, n_val, size, seed), indent=2) + "\n")


def generate_synthetic_dataset(
    out: str | os.PathLike,
    n_train: int = DEFAULT_N_TRAIN,
    n_val: int = DEFAULT_N_VAL,
    size: int = DEFAULT_SIZE,
    seed: int = DEFAULT_SEED,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic VOC-layout dataset to ``out`` and return its path.

    The dataset is written to a temporary sibling folder and renamed into place, so ``out``
    never holds a partial dataset. Raises :class:`~rrm.utils.errors.DatasetError` if ``out``
    exists and is not empty, unless ``overwrite``.
    """
    if n_train < 1 or n_val < 1 or size < 32:
        raise InputError("need n_train >= 1, n_val >= 1 and size >= 32")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DatasetError(f"output folder {out} exists and is not empty (pass overwrite=True / --overwrite)")
    _write_into_place(out, n_train, n_val, size, seed, replace=True)
    return out


def _write_into_place(target: Path, n_train: int, n_val: int, size: int, seed: int, replace: bool) -> None:
    """Write the dataset to a temporary sibling of ``target``, then rename it to ``target``.
    ``replace`` removes an existing ``target`` first; without it a ``target`` that another
    process renamed into place meanwhile is kept and this copy discarded."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write_dataset(staging, n_train, n_val, size, seed)
        if replace and target.exists():
            shutil.rmtree(target)
        try:
            os.rename(staging, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def default_cache_root() -> Path:
    """``$RRM_CACHE`` if set, else ``~/.cache/rrm``."""
    return Path(os.environ.get("RRM_CACHE") or Path.home() / ".cache" / "rrm")


def synthetic_dataset_root(
    cache_dir: str | os.PathLike | None = None,
    n_train: int = DEFAULT_N_TRAIN,
    n_val: int = DEFAULT_N_VAL,
    size: int = DEFAULT_SIZE,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Where :func:`ensure_synthetic_dataset` keeps the dataset of these parameters."""
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    name = f"synthetic-v{SYNTHETIC_VERSION}"
    if (n_train, n_val, size, seed) != (DEFAULT_N_TRAIN, DEFAULT_N_VAL, DEFAULT_SIZE, DEFAULT_SEED):
        name += f"-train{n_train}-val{n_val}-size{size}-seed{seed}"
    return cache_root / name


def embedded_dataset(report: Callable[[str], None] = print) -> Path:
    """The root of the default synthetic dataset (what the command lines use without
    ``--data-root``), generated on first use; ``report`` gets a line saying where it is and
    whether it was generated now (with the time it took) or earlier."""
    root = synthetic_dataset_root()
    if root.exists():
        ensure_synthetic_dataset()
        report(f"dataset: the embedded synthetic dataset in {root} (generated earlier; --data-root to use another)")
        return root
    report(f"dataset: generating the embedded synthetic dataset in {root} (about a minute, once) ...")
    start = time.perf_counter()
    ensure_synthetic_dataset()
    report(f"dataset: generated in {time.perf_counter() - start:.0f} s")
    return root


def data_root_of(option: str | os.PathLike | None, report: Callable[[str], None] = print) -> Path:
    """The dataset root of a ``--data-root`` option: the given folder, or (None) the
    embedded synthetic dataset; ``report`` gets a line naming it."""
    if option is None:
        return embedded_dataset(report)
    report(f"dataset: {option}")
    return Path(option)


def ensure_synthetic_dataset(
    cache_dir: str | os.PathLike | None = None,
    n_train: int = DEFAULT_N_TRAIN,
    n_val: int = DEFAULT_N_VAL,
    size: int = DEFAULT_SIZE,
    seed: int = DEFAULT_SEED,
) -> Path:
    """Return the root of a synthetic dataset in the cache, generating it on first use.

    The folder is ``<cache_dir>/synthetic-v<SYNTHETIC_VERSION>`` for the default parameters
    and ``<cache_dir>/synthetic-v<SYNTHETIC_VERSION>-train<N>-val<M>-size<S>-seed<K>``
    otherwise; ``cache_dir``
    defaults to :func:`default_cache_root`. Generation is atomic (temporary folder, then
    rename), so concurrent callers (e.g. the ranks of a ``torchrun`` job) are safe: the first
    rename wins and the others discard their copy.
    """
    root = synthetic_dataset_root(cache_dir, n_train, n_val, size, seed)
    wanted = _metadata(n_train, n_val, size, seed)
    if not root.exists():
        _write_into_place(root, n_train, n_val, size, seed, replace=False)
    metadata_path = root / METADATA_FILE
    try:
        found = json.loads(metadata_path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{root} is not a synthetic dataset ({metadata_path}: {error}); remove it") from error
    if found != wanted:
        raise DatasetError(f"{root} holds a synthetic dataset with other parameters ({metadata_path}); remove it")
    return root
