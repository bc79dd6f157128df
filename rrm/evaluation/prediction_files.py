"""Predicting the images of a split into files: images read in same-size batches, one mask
PNG (and optionally the probabilities) per image, written atomically, so that an
interrupted run resumes by skipping the images whose outputs exist. Used by ``rrm.infer``,
``rrm.pseudo_labels`` and the two-step run."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rrm.data import image_paths, normalize_image, read_image, split_names, write_mask
from rrm.evaluation.model_loading import load_segmentation_model
from rrm.evaluation.prediction import PredictionOptions, labels_of, predict_batch
from rrm.utils.errors import DatasetError, InputError
from rrm.utils.files import write_atomic

SUBMISSION_DIR = Path("results", "VOC2012", "Segmentation", "comp6_test_cls")
PROBS_DIR = "probs"
PROGRESS_LINES = 10  # progress lines printed over a run


@dataclass(frozen=True)
class OutputLayout:
    """Where the outputs of image ``name`` go under ``out``: ``out/<name>.png`` (with
    ``voc_submission`` under :data:`SUBMISSION_DIR`) and, with ``save_probs``,
    ``out/probs/<name>.npy``."""

    out: Path
    voc_submission: bool = False
    save_probs: bool = False

    @property
    def mask_dir(self) -> Path:
        return self.out / SUBMISSION_DIR if self.voc_submission else self.out

    def mask_path(self, name: str) -> Path:
        return self.mask_dir / f"{name}.png"

    def probs_path(self, name: str) -> Path:
        return self.out / PROBS_DIR / f"{name}.npy"

    def is_complete(self, name: str) -> bool:
        """All outputs of ``name`` exist (each is renamed into place only once complete)."""
        return self.mask_path(name).is_file() and (not self.save_probs or self.probs_path(name).is_file())


@dataclass
class ImageBatch:
    """Images of one size: ``names``; ``images`` float32 ``[B, 3, H, W]`` ImageNet-normalised;
    ``images_uint8`` uint8 ``[B, 3, H, W]`` (for the CRF)."""

    names: list[str]
    images: torch.Tensor
    images_uint8: torch.Tensor


@dataclass(frozen=True)
class SplitSummary:
    """What a prediction run did: ``total`` images in this process's share of the split, of
    which ``skipped`` already had their outputs and ``written`` were predicted now."""

    total: int
    skipped: int
    written: int


def same_size_batches(paths: Sequence[Path], batch_size: int) -> list[list[int]]:
    """Indices into ``paths`` grouped into batches of at most ``batch_size`` images of one
    size (read from the file headers), in list order within each size."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                size = image.size
        except (OSError, SyntaxError, ValueError) as error:
            raise DatasetError(f"cannot read image {path}: {error}") from None
        by_size.setdefault(size, []).append(index)
    return [group[i:i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]


def load_batch(names: Sequence[str], paths: Sequence[Path]) -> ImageBatch:
    """Decode same-size images into an :class:`ImageBatch`."""
    pictures = [read_image(path) for path in paths]  # uint8 [H, W, 3] each
    images = torch.from_numpy(np.stack([normalize_image(picture) for picture in pictures]))
    images_uint8 = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()
    return ImageBatch(list(names), images, images_uint8)


def save_outputs(layout: OutputLayout, names: Sequence[str], probabilities: torch.Tensor,
                 ignore_below: float = 0.0) -> None:
    """Write the mask (:func:`~rrm.evaluation.prediction.labels_of`) and, if the layout asks
    for them, the float16 probabilities ``[L, H, W]`` of each image of a batch; the
    probabilities go first, so an existing mask means the image is complete."""
    masks = labels_of(probabilities, ignore_below).cpu().numpy()
    stored = probabilities.half().cpu().numpy() if layout.save_probs else None
    for index, name in enumerate(names):
        if stored is not None:
            write_atomic(layout.probs_path(name), partial(np.save, arr=stored[index]))
        write_atomic(layout.mask_path(name), partial(write_mask, mask=masks[index]))


def predict_images(network: torch.nn.Module, names: Sequence[str], paths: Sequence[Path], layout: OutputLayout,
                   options: PredictionOptions, batch_size: int, device: torch.device) -> None:
    """Predict and save the images ``paths`` (named ``names``) in same-size batches,
    printing progress about :data:`PROGRESS_LINES` times."""
    batches = same_size_batches(paths, batch_size)
    report_every = max(1, len(batches) // PROGRESS_LINES)
    started, done = time.perf_counter(), 0
    for number, indices in enumerate(batches, start=1):
        batch = load_batch([names[i] for i in indices], [paths[i] for i in indices])
        probabilities = predict_batch(network, batch.images.to(device), batch.images_uint8.to(device), options)
        save_outputs(layout, batch.names, probabilities, options.ignore_below)
        done += len(indices)
        if number % report_every == 0 or number == len(batches):
            rate = done / max(time.perf_counter() - started, 1e-9)
            print(f"[{done}/{len(names)}] {rate:.2f} images/s", flush=True)


def predict_split(checkpoint: str | os.PathLike, data_root: str | os.PathLike, split: str, layout: OutputLayout,
                  options: PredictionOptions, batch_size: int, device: torch.device, *, title: str,
                  backbone: str | None = None, overwrite: bool = False, rank: int = 0,
                  world_size: int = 1, stage: str | None = None) -> SplitSummary:
    """Predict the images ``rank::world_size`` of ``split`` whose outputs are not in
    ``layout`` yet (all with ``overwrite``) with the network of ``checkpoint`` (of ``stage``
    when given); rank 0 prints the model and ``"<title>: N images, K already done, M to
    predict"``."""
    model = load_segmentation_model(checkpoint, backbone, stage)
    names = split_names(data_root, split)[rank::world_size]
    pending = [name for name in names if overwrite or not layout.is_complete(name)]
    paths = image_paths(data_root, pending)
    if rank == 0:
        print(f"model: {model.description}; device: {device}", flush=True)
        print(f"{title}: {len(names)} images, {len(names) - len(pending)} already done, {len(pending)} to predict",
              flush=True)
    predict_images(model.network.to(device), pending, paths, layout, options, batch_size, device)
    return SplitSummary(total=len(names), skipped=len(names) - len(pending), written=len(pending))


def export_pseudo_labels(checkpoint: str | os.PathLike, data_root: str | os.PathLike, split: str,
                         out: str | os.PathLike, options: PredictionOptions, batch_size: int = 1,
                         device: torch.device | None = None, rank: int = 0, world_size: int = 1) -> SplitSummary:
    """Write the pseudo labels ``out/<name>.png`` of the images of ``split`` that lack one
    (see ``python -m rrm.pseudo_labels --help``) with a one-step RRM network. Process
    ``rank`` of ``world_size`` handles the images ``rank::world_size``."""
    if not 0.0 <= options.ignore_below <= 1.0:
        raise InputError(f"--ignore-below must be in [0, 1], got {options.ignore_below}")
    return predict_split(checkpoint, data_root, split, OutputLayout(Path(out)), options, batch_size,
                         device or torch.device("cpu"), title=f"pseudo labels of split {split}", rank=rank,
                         world_size=world_size, stage="rrm")
