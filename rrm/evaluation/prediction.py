"""What ``rrm.infer`` and ``rrm.evaluate`` share: reading a split, loading a segmentation
network from a checkpoint, test-time-augmented prediction, dense-CRF refinement and atomic
output files.

Checkpoints: an rrm training checkpoint (``last.pth``, format ``rrm-train-v1``; the backbone
comes from its config) or a plain state dict (RRM's published ``RRM_final.pth`` and the
like; also a dict holding one under ``state_dict`` or ``model``, with or without
DataParallel's ``module.`` prefix). The network (RRM or step-2 DeepLab), the backbone and the
number of classes are read from the weights' keys and shapes when not given.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from rrm.training.checkpoint import CHECKPOINT_FORMAT
from rrm.data import DatasetError, normalize_image, read_image, read_image_list
from rrm.data.layout import IMAGE_DIR, LIST_DIR
from rrm.models import build_deeplab, build_rrm

# RRM's inference-time dense CRF (its infer script): Gaussian (sxy 3, compat 3) and
# bilateral (sxy 83, srgb 5, compat 4) kernels, 10 mean-field iterations.
CRF_INFERENCE_PARAMS: dict[str, int | float] = {
    "n_iter": 10,
    "gaussian_sxy": 3.0,
    "gaussian_compat": 3.0,
    "bilateral_sxy": 83.0,
    "bilateral_srgb": 5.0,
    "bilateral_compat": 4.0,
}

# Keys that identify the network (by its output layer) and its backbone (by its first layer).
_SEG_OUTPUT_KEYS = {"rrm": "fc8_seg_conv2.weight", "deeplab": "classifier.0.weight"}
_BACKBONE_KEYS = {
    "rrm": {"resnet38": "conv1a.weight", "small": "stage1.0.weight"},
    "deeplab": {"resnet101": "backbone.conv1.weight", "small": "backbone.stage1.0.weight"},
}


class CommandError(RuntimeError):
    """A problem with the command's arguments or inputs that the user can fix; the CLIs print
    its message as one ``error:`` line and exit with status 2."""


# --- splits -------------------------------------------------------------------------------


def split_names(root: str | os.PathLike, split: str) -> list[str]:
    """Image names of ``split``: a list name (``ImageSets/Segmentation/<split>.txt`` under
    ``root``) or the path of a list file. Raises :class:`DatasetError` naming the path if the
    root or the list is missing, or the list is empty."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root does not exist or is not a folder: {root}")
    as_path = Path(split)
    if as_path.suffix == ".txt" or len(as_path.parts) > 1:
        list_path = as_path
    else:
        list_path = root / LIST_DIR / f"{split}.txt"
        if not list_path.is_file() and (root / LIST_DIR).is_dir():
            available = sorted(path.stem for path in (root / LIST_DIR).glob("*.txt"))
            raise DatasetError(f"image list not found: {list_path} (available: {available})")
    names = read_image_list(list_path)
    if not names:
        raise DatasetError(f"image list {list_path} names no images")
    return names


def image_paths(root: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """``root/JPEGImages/<name>.jpg`` for each name; :class:`DatasetError` naming the first
    missing files and their count if any does not exist."""
    paths = [Path(root) / IMAGE_DIR / f"{name}.jpg" for name in names]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        shown = ", ".join(str(path) for path in missing[:3])
        more = " ..." if len(missing) > 3 else ""
        raise DatasetError(f"{len(missing)} of {len(paths)} images not found: {shown}{more}")
    return paths


# --- checkpoints --------------------------------------------------------------------------


@dataclass
class SegmentationModel:
    """A network ready for inference: ``network(images)["seg_logits"]`` is
    ``[B, num_classes + 1, h, w]`` (channel 0 background) for ImageNet-normalised images."""

    network: nn.Module
    kind: str  # "rrm" or "deeplab"
    backbone: str
    num_classes: int
    description: str  # where the weights came from, for the log


def load_segmentation_model(path: str | os.PathLike, backbone: str | None = None) -> SegmentationModel:
    """Load an RRM or DeepLab network from a checkpoint (see the module docstring), on the CPU
    in eval mode. ``backbone`` overrides the checkpoint's. Raises :class:`CommandError` with
    a one-line reason for a missing, unreadable or unsuitable file or an unknown backbone."""
    path = Path(path)
    if not path.is_file():
        raise CommandError(f"checkpoint not found: {path}")
    content = _read_torch_file(path)
    is_training_checkpoint = isinstance(content, dict) and content.get("format") == CHECKPOINT_FORMAT
    state = _state_dict_of(content.get("model") if is_training_checkpoint else content, path)
    kind = _network_kind(state, path)
    saved_backbone = (content.get("config") or {}).get("backbone") if is_training_checkpoint else None
    backbone = backbone or saved_backbone or _guess_backbone(state, kind, path)
    num_classes = int(state[_SEG_OUTPUT_KEYS[kind]].shape[0]) - 1
    builder = build_rrm if kind == "rrm" else build_deeplab
    try:
        network = builder(backbone, num_classes)
    except ValueError as error:
        raise CommandError(str(error)) from None
    check_state_dict_fits(network.state_dict(), state, f"checkpoint {path} does not fit {kind} with backbone {backbone!r}")
    network.load_state_dict(state)
    network.eval()
    source = f"rrm training checkpoint (step {content.get('step', '?')})" if is_training_checkpoint else "state dict"
    description = f"{path}: {source}, {kind}/{backbone}, {num_classes} classes"
    return SegmentationModel(network, kind, backbone, num_classes, description)


def _read_torch_file(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CommandError(f"cannot read checkpoint {path}: not a loadable PyTorch file ({reason})") from None


def _state_dict_of(content: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(content, dict):
        for key in ("state_dict", "model"):
            if isinstance(content.get(key), dict):
                content = content[key]
                break
    if not isinstance(content, dict) or not content or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CommandError(f"checkpoint {path} does not hold a state dict of tensors")
    if all(key.startswith("module.") for key in content):  # saved from (Distributed)DataParallel
        content = {key[len("module."):]: value for key, value in content.items()}
    return dict(content)


def _network_kind(state: dict[str, torch.Tensor], path: Path) -> str:
    for kind, key in _SEG_OUTPUT_KEYS.items():
        if key in state:
            return kind
    if "fc8.weight" in state:
        raise CommandError(
            f"checkpoint {path} has no segmentation branch (fc8_seg_conv*): it is a classification network "
            "such as PSA's res38_cls.pth; inference needs RRM or DeepLab weights"
        )
    raise CommandError(f"checkpoint {path} holds neither RRM nor DeepLab weights (first keys: {list(state)[:3]})")


def _guess_backbone(state: dict[str, torch.Tensor], kind: str, path: Path) -> str:
    for backbone, key in _BACKBONE_KEYS[kind].items():
        if key in state:
            return backbone
    raise CommandError(f"cannot tell the backbone of checkpoint {path} from its keys; pass --backbone")


def check_state_dict_fits(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], context: str) -> None:
    """Raise :class:`CommandError` summarising missing, unexpected and mis-shaped keys (torch's
    own message lists every key over many lines)."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    mismatched = [
        f"{key} {tuple(found[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in found and found[key].shape != value.shape
    ]
    found_problems = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched))
    problems = [f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})" for label, keys in found_problems if keys]
    if problems:
        raise CommandError(f"{context}: {'; '.join(problems)}")


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CommandError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"device {name!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise CommandError(f"unsupported device {name!r}; use cpu, cuda, cuda:N or auto")
    return device


# --- prediction ---------------------------------------------------------------------------


@dataclass
class ImageBatch:
    """Images of one size: ``names``; ``images`` float32 ``[B, 3, H, W]`` ImageNet-normalised;
    ``images_uint8`` uint8 ``[B, 3, H, W]`` (for the CRF)."""

    names: list[str]
    images: torch.Tensor
    images_uint8: torch.Tensor


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


@torch.inference_mode()
def segmentation_probabilities(
    network: nn.Module, images: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False
) -> torch.Tensor:
    """Test-time-augmented class probabilities of the segmentation branch.

    For each scale ``s`` the images ``[B, 3, H, W]`` (ImageNet-normalised) are resized
    bilinearly to ``(int(H s), int(W s))``, and with ``flip`` also mirrored left-right; the
    logits are resized bilinearly to ``H, W`` (as RRM does, before the softmax), turned into
    probabilities by softmax, mirrored back, and all ``len(scales) * (1 + flip)`` maps are
    averaged. Returns float32 ``[B, L, H, W]`` on the images' device, summing to 1 over L.
    """
    height, width = images.shape[-2:]
    batch = images.shape[0]
    total = None
    for scale in scales:
        scaled = images
        if scale != 1.0:
            size = (max(1, int(height * scale)), max(1, int(width * scale)))
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        if flip:  # one forward pass over the originals and their mirror images
            scaled = torch.cat([scaled, scaled.flip(-1)])
        logits = network(scaled)["seg_logits"]
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        probabilities = logits.float().softmax(dim=1)
        if flip:
            probabilities = probabilities[:batch] + probabilities[batch:].flip(-1)
        total = probabilities if total is None else total + probabilities
    return total / (len(scales) * (2 if flip else 1))


def crf_available() -> bool:
    """Whether ``rrm_ops`` is built and has the dense CRF op. It is imported only here and in
    :func:`refine_with_crf`, so evaluation and CRF-free inference need no compiled extension."""
    try:
        import rrm_ops
    except ImportError:
        return False
    return hasattr(rrm_ops, "dense_crf")


def refine_with_crf(probabilities: torch.Tensor, images_uint8: torch.Tensor) -> torch.Tensor:
    """RRM's inference-time dense CRF (:data:`CRF_INFERENCE_PARAMS`) on probabilities
    float32 ``[B, L, H, W]`` and images uint8 ``[B, 3, H, W]``; returns the mean-field
    marginals float32 ``[B, L, H, W]``."""
    import rrm_ops

    return rrm_ops.dense_crf(probabilities, images_uint8, **CRF_INFERENCE_PARAMS)


# --- output files -------------------------------------------------------------------------


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` for a temporary file beside ``path`` (same suffix, so
    writers that pick the format from the name work), then rename it over ``path``: an
    interrupted run never leaves a partial file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name the writer creates itself, so the file gets the usual permissions.
    temporary = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
