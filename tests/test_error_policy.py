"""The error policy (docs/error-policy.md): every command line reports a usage error as one
``error:`` line on stderr with exit status 2 and no traceback; the wrappers of the kernels
raise TypeError for a wrong type and ValueError for a wrong value."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import rrm_ops
from rrm.data import write_mask
from rrm.utils.errors import CheckpointError, ConfigError, DatasetError, InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("rrm.train", "rrm.infer", "rrm.evaluate", "rrm.pseudo_labels", "rrm.data.check", "rrm.data.synthetic",
                "rrm.models.mxnet_params")


@pytest.fixture(scope="module")
def one_image_dataset(tmp_path_factory) -> Path:
    """A VOC-layout folder with one image (and its mask) listed in ``val``."""
    root = tmp_path_factory.mktemp("voc")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("only\n")
    (root / "JPEGImages").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "JPEGImages" / "only.jpg")
    (root / "SegmentationClass").mkdir()
    write_mask(root / "SegmentationClass" / "only.png", np.zeros((16, 16), np.uint8))
    return root


def missing_file_arguments(module: str, root: Path, tmp: Path) -> list[str]:
    """Arguments that name one input file that does not exist (a non-empty output folder for
    the generator, whose only input is its options)."""
    absent = str(tmp / "absent")
    if module == "rrm.train":
        return ["--resume", f"{absent}/last.pth"]
    if module in ("rrm.infer", "rrm.pseudo_labels"):
        return ["--checkpoint", f"{absent}.pth", "--data-root", str(root), "--split", "val", "--out", str(tmp / "o")]
    if module == "rrm.evaluate":
        return ["--pred", absent, "--data-root", str(root)]
    if module == "rrm.data.check":
        return [absent]
    if module == "rrm.data.synthetic":
        (tmp / "full").mkdir()
        (tmp / "full" / "file").write_text("")
        return ["--out", str(tmp / "full")]
    return [f"{absent}.params", str(tmp / "out.pth")]


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_a_missing_input_exits_2_with_one_error_line(module, one_image_dataset, tmp_path):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", module, *missing_file_arguments(module, one_image_dataset, tmp_path)],
                            capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert "absent" in line or "not empty" in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "out.pth").exists()


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_an_unknown_flag_exits_2_with_one_error_line(module, one_image_dataset, tmp_path, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_info:
        main([*missing_file_arguments(module, one_image_dataset, tmp_path), "--no-such-flag"])
    assert exit_info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--no-such-flag" in line and f"python -m {module} --help" in line


@pytest.mark.parametrize("module, abbreviation", [("rrm.train", "--max-step"), ("rrm.train", "--cls-only"),
                                                  ("rrm.infer", "--check"), ("rrm.evaluate", "--pre")])
def test_an_abbreviated_option_is_an_unknown_flag(module, abbreviation, capsys):
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_info:
        main([abbreviation, "1"])
    assert exit_info.value.code == 2
    assert abbreviation in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("module", ["rrm.train", "rrm.infer"])
def test_a_missing_gpu_is_worded_alike(module, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    main = importlib.import_module(module).main
    arguments = ["--checkpoint", str(tmp_path / "c.pth"), "--out", str(tmp_path / "o")] if module == "rrm.infer" else []
    assert main([*arguments, "--device", "cuda"]) == 2
    assert one_error_line(capsys.readouterr().err) == "error: device 'cuda' requested but CUDA is not available"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--max-steps", "x"], "max_steps must be int"),
        (["--cam-scales", "1,-1"], "cam_scales: expected positive numbers"),
        (["--alpha-low", "0"], "alpha_low must be > 0"),
        (["--crf-sure", "2"], "crf_sure must be in [0, 1]"),
        (["--stage", "step3"], "stage must be 'rrm' or 'fcn'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_train_rejects_bad_values_before_training(arguments, message, tmp_path, capsys):
    from rrm.train import main

    assert main(["--out", str(tmp_path / "run"), *arguments]) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_input_errors_are_value_errors():
    for kind in (InputError, ConfigError, DatasetError, CheckpointError):
        assert issubclass(kind, ValueError)


# --- the wrappers of the kernels ----------------------------------------------------------


def _mining_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.ones(1, 2, 4, 4), torch.ones(1, 2), torch.zeros(1, 4, 4, 3, dtype=torch.uint8)


@pytest.mark.parametrize(
    "position, value, message",
    [
        (0, [[1.0]], "cams must be a torch.Tensor"),
        (0, torch.ones(1, 2, 4, 4, dtype=torch.int64), "cams must be float32 or float64"),
        (1, np.ones((1, 2)), "cls_labels must be a torch.Tensor"),
        (2, torch.zeros(1, 4, 4, 3), "images must have dtype uint8"),
    ],
)
def test_mining_wrong_types_raise_type_error(position, value, message):
    arguments = list(_mining_inputs())
    arguments[position] = value
    with pytest.raises(TypeError, match=message):
        rrm_ops.reliable_region_labels(*arguments)


@pytest.mark.parametrize(
    "position, value, message",
    [
        (0, torch.ones(2, 4, 4), "cams must be 4-D \\[B, C, H, W\\]"),
        (2, torch.zeros(4, 4, 3, dtype=torch.uint8), "images must be uint8"),
    ],
)
def test_mining_wrong_shapes_raise_value_error(position, value, message):
    arguments = list(_mining_inputs())
    arguments[position] = value
    with pytest.raises(ValueError, match=message):
        rrm_ops.reliable_region_labels(*arguments)


def test_lattice_features_of_a_non_tensor_raise_type_error():
    with pytest.raises(TypeError, match="image must be a torch.Tensor"):
        rrm_ops.bilateral_features(np.zeros((1, 4, 4, 3), np.uint8), 8.0, 13.0)
    with pytest.raises(ValueError, match="image must be"):
        rrm_ops.bilateral_features(torch.zeros(4, 4, 3, dtype=torch.uint8), 8.0, 13.0)
