"""Read and write MXNet ``.params`` files (the NDArray-list binary format) without mxnet, and
convert the ImageNet ResNet-38 initialisation ``ilsvrc-cls_rna-a1_cls1000_ep-0001.params``
to a PyTorch state dict with this package's (PSA's) ResNet-38 names (command line:
``python -m rrm.models.mxnet_params``).

File format (little-endian), as MXNet's ``NDArray::Save``/``Load`` define it::

    uint64 0x112 (list magic), uint64 reserved,
    uint64 n, then n arrays, uint64 m (0 or n), then m names (uint64 length + bytes)

and each array is one of

- V2 (magic uint32 0xF993FAC9) / V3 (0xF993FACA): int32 storage type (0 = dense), shape,
  context (int32 device type, int32 device id), int32 type flag, raw data;
  the shape is a uint32 (V3: int32) ndim followed by ndim int64 dims;
- V1 (0xF993FAC8): shape as above, context, type flag, data;
- legacy (no magic): the first uint32 is ndim, followed by ndim uint32 dims, then context,
  type flag, data.

An array with ndim 0 (V3: ndim -1) is an empty "none" array with nothing after its shape.
Names are ``arg:<name>`` for learned parameters and ``aux:<name>`` for BatchNorm statistics.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import numpy as np
import torch

from rrm.models.resnet38 import ResNet38
from rrm.models.weights import check_state_dict_fits
from rrm.utils.errors import InputError
from rrm.utils.files import write_atomic

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA
DENSE_STORAGE = 0
CPU_DEVICE = 1

# mshadow type flags.
TYPE_FLAGS: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
}
_FLAG_OF_DTYPE = {dtype: flag for flag, dtype in TYPE_FLAGS.items()}


class ParamsFormatError(InputError):
    """The file is not a valid MXNet NDArray list (or uses a feature this reader lacks), or
    not the ResNet-38 ImageNet weights."""


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.offset, self.path = data, 0, path

    def take(self, count: int) -> bytes:
        if count < 0 or self.offset + count > len(self.data):
            raise ParamsFormatError(f"{self.path}: truncated at byte {self.offset} (wanted {count} more bytes)")
        chunk = self.data[self.offset:self.offset + count]
        self.offset += count
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))


def _read_array(reader: _Reader, index: int) -> np.ndarray | None:
    (magic,) = reader.unpack("I")
    if magic in (V2_MAGIC, V3_MAGIC):
        (storage,) = reader.unpack("i")
        if storage != DENSE_STORAGE:
            raise ParamsFormatError(f"{reader.path}: array {index} has sparse storage type {storage}")
        (ndim,) = reader.unpack("i" if magic == V3_MAGIC else "I")
        if (magic == V3_MAGIC and ndim < 0) or (magic == V2_MAGIC and ndim == 0):
            return None
        shape = reader.unpack(f"{ndim}q")
    elif magic == V1_MAGIC:
        (ndim,) = reader.unpack("I")
        if ndim == 0:
            return None
        shape = reader.unpack(f"{ndim}q")
    else:  # legacy: the word read is ndim
        ndim = magic
        if ndim == 0:
            return None
        if ndim > 32:
            raise ParamsFormatError(f"{reader.path}: array {index} starts with unknown magic {magic:#x}")
        shape = reader.unpack(f"{ndim}I")
    reader.unpack("ii")  # context: device type, device id (arrays are loaded on the CPU)
    (type_flag,) = reader.unpack("i")
    if type_flag not in TYPE_FLAGS:
        raise ParamsFormatError(f"{reader.path}: array {index} has unknown type flag {type_flag}")
    dtype = TYPE_FLAGS[type_flag]
    count = int(np.prod(shape, dtype=np.int64))
    data = reader.take(count * dtype.itemsize)
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def read_params(path: str | os.PathLike) -> dict[str, np.ndarray | None]:
    """Read an MXNet NDArray-list file into ``{name: array}`` in file order (names keep their
    ``arg:``/``aux:`` prefixes; unnamed lists get ``"0"``, ``"1"``, ...; "none" arrays are
    None). Raises :class:`ParamsFormatError` naming the path if the file is malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    reader = _Reader(path.read_bytes(), path)
    header, _reserved = reader.unpack("QQ")
    if header != LIST_MAGIC:
        raise ParamsFormatError(f"{path}: not an MXNet NDArray list (header {header:#x}, expected {LIST_MAGIC:#x})")
    (count,) = reader.unpack("Q")
    arrays = [_read_array(reader, index) for index in range(count)]
    (name_count,) = reader.unpack("Q")
    if name_count not in (0, count):
        raise ParamsFormatError(f"{path}: {count} arrays but {name_count} names")
    names = []
    for _ in range(name_count):
        (length,) = reader.unpack("Q")
        names.append(reader.take(length).decode("utf-8"))
    if reader.offset != len(reader.data):
        raise ParamsFormatError(f"{path}: {len(reader.data) - reader.offset} unexpected bytes after the names")
    if not names:
        names = [str(index) for index in range(count)]
    return dict(zip(names, arrays))


def write_params(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], version: str = "v2") -> None:
    """Write ``{name: array}`` as an MXNet NDArray list, each array in format ``version``
    (``"v2"`` as MXNet >= 1.0 writes, ``"v1"`` or ``"legacy"`` as older MXNet wrote)."""
    if version not in ("v2", "v1", "legacy"):
        raise ValueError(f"version must be 'v2', 'v1' or 'legacy', got {version!r}")
    chunks = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
        if dtype not in _FLAG_OF_DTYPE:
            raise ValueError(f"array {name!r} has dtype {array.dtype}, which MXNet files cannot hold")
        if version == "v2":
            chunks.append(struct.pack("<IiI", V2_MAGIC, DENSE_STORAGE, array.ndim))
            chunks.append(struct.pack(f"<{array.ndim}q", *array.shape))
        elif version == "v1":
            chunks.append(struct.pack("<II", V1_MAGIC, array.ndim))
            chunks.append(struct.pack(f"<{array.ndim}q", *array.shape))
        else:
            chunks.append(struct.pack(f"<I{array.ndim}I", array.ndim, *array.shape))
        chunks.append(struct.pack("<iii", CPU_DEVICE, 0, _FLAG_OF_DTYPE[dtype]))
        chunks.append(array.astype(dtype, copy=False).tobytes())
    chunks.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        encoded = name.encode("utf-8")
        chunks.append(struct.pack("<Q", len(encoded)) + encoded)
    Path(path).write_bytes(b"".join(chunks))


_BLOCK_PARAM = re.compile(
    r"^(?P<kind>res|bn)(?P<stage>\d)(?P<unit>a|b\d+)_branch(?P<branch>1|2a|2b1|2b2)_(?P<param>\w+)$"
)
_BN_PARAMS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_var": "running_var"}
IMAGENET_CLASSIFIER_PREFIX = "linear1000_"


def resnet38_key(mxnet_name: str) -> str | None:
    """Map a ResNet-38 ``.params`` name to this package's state dict key.

    ``arg:res4b3_branch2b1_weight`` -> ``b4_3.conv_branch2b1.weight``,
    ``aux:bn5a_branch2a_moving_var`` -> ``b5.bn_branch2a.running_var``,
    ``arg:bn7_gamma`` -> ``bn7.weight``, ``arg:conv1a_weight`` -> ``conv1a.weight``.
    Returns None for the ImageNet classifier (``linear1000_*``), which has no counterpart;
    raises ``KeyError`` for names it does not know.
    """
    name = mxnet_name.split(":", 1)[1] if mxnet_name.startswith(("arg:", "aux:")) else mxnet_name
    if name.startswith(IMAGENET_CLASSIFIER_PREFIX):
        return None
    if name == "conv1a_weight":
        return "conv1a.weight"
    if name.startswith("bn7_") and name[4:] in _BN_PARAMS:
        return f"bn7.{_BN_PARAMS[name[4:]]}"
    match = _BLOCK_PARAM.match(name)
    if match is not None:
        unit = match["unit"]
        block = f"b{match['stage']}" if unit == "a" else f"b{match['stage']}_{unit[1:]}"
        if match["kind"] == "res" and match["param"] == "weight":
            return f"{block}.conv_branch{match['branch']}.weight"
        if match["kind"] == "bn" and match["param"] in _BN_PARAMS:
            return f"{block}.bn_branch{match['branch']}.{_BN_PARAMS[match['param']]}"
    raise KeyError(f"unknown ResNet-38 parameter name {mxnet_name!r}")


def convert_resnet38_params(arrays: Mapping[str, np.ndarray | None]) -> dict[str, torch.Tensor]:
    """Convert the arrays of the ImageNet ResNet-38 ``.params`` into a state dict for
    :class:`~rrm.models.resnet38.ResNet38` (and so for the backbone of
    ``build_rrm("resnet38")``), float32.

    Checks that the result covers every ResNet-38 parameter and BatchNorm statistic with the
    right shape; raises :class:`~rrm.utils.errors.CheckpointError` (a ``ValueError``) naming
    unknown names, missing keys and mismatches.
    """
    with torch.device("meta"):
        expected = {k: v for k, v in ResNet38().state_dict().items() if not k.endswith("num_batches_tracked")}
    state_dict: dict[str, torch.Tensor] = {}
    unknown: dict[str, torch.Tensor] = {}
    for name, array in arrays.items():
        try:
            key = resnet38_key(name)
        except KeyError:
            unknown[name] = torch.empty(0)  # listed under its own name as an unexpected key
            continue
        if key is None:
            continue
        if array is None:
            raise ParamsFormatError(f"parameter {name!r} is an empty (none) array")
        state_dict[key] = torch.from_numpy(np.asarray(array, dtype=np.float32))
    check_state_dict_fits(expected, {**state_dict, **unknown}, "not a ResNet-38 ImageNet .params file")
    return state_dict


def convert_params_file(src: str | os.PathLike, dst: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read ``src`` (``.params``), convert it with :func:`convert_resnet38_params` and save
    the state dict to ``dst`` with ``torch.save`` (loadable with ``weights_only=True``)."""
    state_dict = convert_resnet38_params(read_params(src))
    write_atomic(dst, partial(torch.save, state_dict))
    return state_dict
