"""Two-step RRM on a tiny generated dataset: the pseudo-label export (files, palette, ignore
handling, resume), step-2 training (stage fcn) and its resume, the two-step run folder and
the numbers of its table, and the error messages of bad arguments."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrm.training.config import TrainConfig
from rrm.data import read_mask, voc_palette, write_mask
from rrm.data import generate_synthetic_dataset
from rrm.evaluation.prediction import labels_of
from rrm.models import build_rrm
from rrm.pseudo_labels import main as pseudo_labels_main
from rrm.train import main as train_main
from rrm.training.checkpoint import save_checkpoint
from rrm.training.two_step import pseudo_label_miou, summary_table, two_step_metrics

TINY = ["--batch-size", "2", "--crop-size", "48", "--num-workers", "0", "--val-every", "0",
        "--checkpoint-every", "2", "--log-every", "1", "--panel-images", "2"]
TINY_ONE_STEP = [*TINY, "--max-steps", "3", "--cls-only-steps", "1", "--cam-scales", "1,0.5"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """6 train and 3 val images of about 48x40 pixels (sizes differ), with masks."""
    return generate_synthetic_dataset(tmp_path_factory.mktemp("data") / "voc", n_train=6, n_val=3, size=48, seed=2)


@pytest.fixture(scope="module")
def train_names(data_root) -> list[str]:
    return (data_root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained small-backbone RRM as an rrm training checkpoint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoint") / "last.pth"
    network = build_rrm("small")
    save_checkpoint(path, network, torch.optim.Adam(network.parameters()), 0, TrainConfig(), torch.device("cpu"), {},
                    0.0)
    return path


@pytest.fixture(scope="module")
def ground_truth_pseudo_labels(tmp_path_factory, data_root, train_names) -> Path:
    """The train masks copied as pseudo labels (step-2 training needs no export to test)."""
    folder = tmp_path_factory.mktemp("pseudo")
    for name in train_names:
        shutil.copy(data_root / "SegmentationClass" / f"{name}.png", folder / f"{name}.png")
    return folder


def export(checkpoint: Path, data_root: Path, out: Path, *extra: str) -> int:
    return pseudo_labels_main(["--checkpoint", str(checkpoint), "--data-root", str(data_root), "--out", str(out),
                               "--device", "cpu", "--scales", "1,0.5", "--flip", "--crf", *extra])


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# --- export -------------------------------------------------------------------------------


def test_export_writes_one_palette_png_per_train_image(tmp_path, data_root, train_names, checkpoint):
    out = tmp_path / "pseudo"
    assert export(checkpoint, data_root, out, "--batch-size", "4") == 0
    assert sorted(path.stem for path in out.glob("*.png")) == sorted(train_names)
    for name in train_names:
        with Image.open(data_root / "JPEGImages" / f"{name}.jpg") as image, Image.open(out / f"{name}.png") as mask:
            assert mask.mode == "P" and mask.size == image.size
            assert np.array_equal(np.asarray(mask.getpalette(), dtype=np.uint8).reshape(-1, 3), voc_palette())
            assert np.asarray(mask).max() <= 20, "the default policy ignores no pixel"
    assert not list(out.glob(".*")), "temporary files left behind"


def test_ignore_threshold_marks_only_unsure_pixels(tmp_path, data_root, train_names, checkpoint):
    everything, thresholded = tmp_path / "all", tmp_path / "thresholded"
    assert export(checkpoint, data_root, everything) == 0
    assert export(checkpoint, data_root, thresholded, "--ignore-below", "0.6") == 0
    ignored = 0
    for name in train_names:
        full, partial = read_mask(everything / f"{name}.png"), read_mask(thresholded / f"{name}.png")
        kept = partial != 255
        assert np.array_equal(partial[kept], full[kept])
        ignored += int((~kept).sum())
    assert ignored > 0, "an untrained network is unsure somewhere"


def test_labels_of_ignores_pixels_below_the_threshold():
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.0, 0.5, 0.5]]).T.reshape(1, 3, 1, 3)
    assert labels_of(probabilities).tolist() == [[[0, 2, 1]]]
    assert labels_of(probabilities, ignore_below=0.5).tolist() == [[[0, 255, 1]]]


def test_interrupted_export_resumes_without_rewriting_finished_images(tmp_path, data_root, train_names, checkpoint,
                                                                      capsys):
    out = tmp_path / "pseudo"
    assert export(checkpoint, data_root, out) == 0
    finished, redone = train_names[2:], train_names[:2]
    for name in redone:  # as if the export had been killed before these were renamed into place
        (out / f"{name}.png").rename(out / f".{name}.123-abcdef01.tmp.png")
    stamps = {name: (out / f"{name}.png").stat().st_mtime_ns for name in finished}
    capsys.readouterr()
    assert export(checkpoint, data_root, out) == 0
    assert f"{len(finished)} already done, {len(redone)} to predict" in capsys.readouterr().out
    assert {name: (out / f"{name}.png").stat().st_mtime_ns for name in finished} == stamps
    assert all((out / f"{name}.png").is_file() for name in redone)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--checkpoint", "/nonexistent/last.pth"], "checkpoint not found: /nonexistent/last.pth"),
        (["--data-root", "/nonexistent/voc"], "/nonexistent/voc"),
        (["--ignore-below", "1.5"], "--ignore-below must be in [0, 1]"),
    ],
)
def test_export_bad_arguments_give_one_line_errors(tmp_path, data_root, checkpoint, arguments, message):
    base = {"--checkpoint": str(checkpoint), "--data-root": str(data_root), "--out": str(tmp_path / "out")}
    base.update(zip(arguments[::2], arguments[1::2]))
    command = [sys.executable, "-m", "rrm.pseudo_labels", *[item for pair in base.items() for item in pair]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert message in one_error_line(result.stderr)


# --- step 2 (stage fcn) -------------------------------------------------------------------


def fcn_arguments(data_root: Path, pseudo: Path, out: Path, steps: int = 4) -> list[str]:
    return ["--stage", "fcn", "--pseudo-labels", str(pseudo), "--data-root", str(data_root), "--out", str(out),
            *TINY, "--max-steps", str(steps)]


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_fcn_stage_trains_a_deeplab_and_writes_the_run_folder(tmp_path, data_root, ground_truth_pseudo_labels):
    out = tmp_path / "fcn"
    assert train_main(fcn_arguments(data_root, ground_truth_pseudo_labels, out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and 0.0 <= metrics["seg_miou"] <= 1.0
    assert "cam_miou" not in metrics
    checkpoint = _state(out / "last.pth")
    assert checkpoint["config"]["stage"] == "fcn"
    assert any(key.startswith("classifier.") for key in checkpoint["model"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/ce" in record for record in records)
    assert list((out / "panels").glob("*.png"))


def test_fcn_stage_resume_ends_with_the_same_parameters(tmp_path, data_root, ground_truth_pseudo_labels):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train_main(fcn_arguments(data_root, ground_truth_pseudo_labels, straight)) == 0
    assert train_main([*fcn_arguments(data_root, ground_truth_pseudo_labels, resumed), "--stop-at", "3"]) == 0
    assert _state(resumed / "last.pth")["step"] == 3
    assert train_main(["--resume", str(resumed / "last.pth")]) == 0
    expected, actual = _state(straight / "last.pth"), _state(resumed / "last.pth")
    assert actual["step"] == 4
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, actual["model"][name]), name


def test_fcn_stage_under_two_process_torchrun_keeps_ranks_in_sync(tmp_path, data_root, ground_truth_pseudo_labels):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29518",
               "-m", "rrm.train", *fcn_arguments(data_root, ground_truth_pseudo_labels, out, steps=2),
               "--batch-size", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["ranks_in_sync"] is True


def test_fcn_stage_uses_its_own_default_schedule(tmp_path, data_root, ground_truth_pseudo_labels):
    out = tmp_path / "fcn"
    arguments = fcn_arguments(data_root, ground_truth_pseudo_labels, out)
    assert train_main([*arguments, "--stop-at", "1"]) == 0
    config = _state(out / "last.pth")["config"]
    assert config["cls_only_steps"] == 0 and config["max_steps"] == 4


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--stage", "fcn"], "pass --pseudo-labels"),
        (["--stage", "fcn", "--pseudo-labels", "/nonexistent/pseudo"], "mask folder missing: /nonexistent/pseudo"),
        (["--stage", "fcn", "--pseudo-labels", "PSEUDO", "--backbone", "resnet38"], "unknown DeepLab backbone"),
        (["--two-step", "--resume", "/nonexistent/last.pth"], "rerun with the same --out"),
        (["--two-step", "--fcn-max-steps", "0"], "--fcn-max-steps must be > 0"),
    ],
)
def test_train_bad_stage_arguments_give_clear_errors(tmp_path, data_root, ground_truth_pseudo_labels, arguments,
                                                     message):
    arguments = [str(ground_truth_pseudo_labels) if item == "PSEUDO" else item for item in arguments]
    base = ["--data-root", str(data_root), "--out", str(tmp_path / "run"), *TINY]
    result = subprocess.run([sys.executable, "-m", "rrm.train", *base, *arguments], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert message in one_error_line(result.stderr)


def test_missing_pseudo_labels_are_named(tmp_path, data_root, ground_truth_pseudo_labels, train_names, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(ground_truth_pseudo_labels, partial)
    (partial / f"{train_names[0]}.png").unlink()
    assert train_main(fcn_arguments(data_root, partial, tmp_path / "run")) == 2
    assert f"1 of {len(train_names)} masks missing from {partial}" in capsys.readouterr().err


# --- two-step run and its table -----------------------------------------------------------


def reference_miou(pairs: list[tuple[np.ndarray, np.ndarray]], num_labels: int = 21) -> float:
    """mIoU over classes with a non-empty union; ground truth 255 is not counted, a
    predicted 255 is a miss."""
    ious = []
    for label in range(num_labels):
        intersection = union = 0
        for prediction, truth in pairs:
            counted = truth != 255
            is_prediction, is_truth = (prediction == label) & counted, (truth == label) & counted
            intersection += int((is_prediction & is_truth).sum())
            union += int((is_prediction | is_truth).sum())
        if union:
            ious.append(intersection / union)
    return float(np.mean(ious))


def test_pseudo_label_miou_against_the_train_masks(tmp_path, data_root, train_names):
    pseudo, pairs = tmp_path / "pseudo", []
    pseudo.mkdir()
    for index, name in enumerate(train_names):
        truth = read_mask(data_root / "SegmentationClass" / f"{name}.png")
        prediction = np.where(truth == 255, 0, truth).astype(np.uint8)
        if index % 2:  # erase the objects of every other image: misses for their classes
            prediction[:] = 0
        prediction[: prediction.shape[0] // 4] = 255  # an ignored band: misses too
        write_mask(pseudo / f"{name}.png", prediction)
        pairs.append((prediction, truth))
    expected = reference_miou(pairs)
    assert 0.1 < expected < 0.9
    assert pseudo_label_miou(pseudo, data_root, "train") == pytest.approx(expected, abs=1e-12)


def test_perfect_pseudo_labels_score_one(data_root, ground_truth_pseudo_labels):
    assert pseudo_label_miou(ground_truth_pseudo_labels, data_root, "train") == pytest.approx(1.0)


def test_two_step_metrics_and_table():
    one_step = {"cam_miou": 0.41, "reliable_precision": 0.9, "reliable_coverage": 0.5, "seg_miou": 0.626,
                "seg_crf_miou": 0.64, "steps": 2600, "wall_time_s": 600.0}
    fcn = {"seg_miou": 0.663, "seg_crf_miou": 0.68, "steps": 1000, "wall_time_s": 200.0}
    metrics = two_step_metrics(one_step, 0.7, fcn, 50.0)
    assert {key: metrics[key] for key in one_step if key != "wall_time_s"} == {
        key: value for key, value in one_step.items() if key != "wall_time_s"}
    assert metrics["pseudo_label_miou"] == 0.7 and metrics["two_step_miou"] == 0.663
    assert metrics["wall_time_s"] == 850.0 and metrics["one_step_wall_time_s"] == 600.0
    table = summary_table(metrics).splitlines()
    expected_rows = {"CAM mIoU (val)": "41.00", "reliable-label precision (train)": "90.00",
                     "reliable-label coverage (train)": "50.00", "one-step mIoU (val)": "62.60",
                     "pseudo-label mIoU (train masks)": "70.00", "two-step mIoU (val)": "66.30",
                     "one-step mIoU, scales + flip + CRF (val)": "64.00",
                     "two-step mIoU, scales + flip + CRF (val)": "68.00"}
    for label, value in expected_rows.items():
        assert any(line.startswith(label) and line.split()[-1] == value for line in table), (label, table)
    assert summary_table({**metrics, "pseudo_label_miou": math.nan}).count(" -") == 1


def test_two_step_run_writes_all_stages_and_resumes_by_skipping_them(tmp_path, data_root, capsys):
    out = tmp_path / "two"
    arguments = ["--two-step", "--data-root", str(data_root), "--out", str(out), *TINY_ONE_STEP,
                 "--fcn-max-steps", "2"]
    assert train_main(arguments) == 0
    first_output = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("cam_miou", "reliable_precision", "reliable_coverage", "seg_miou", "pseudo_label_miou",
                "two_step_miou", "wall_time_s"):
        assert key in metrics, key
    assert metrics["seg_miou"] == json.loads((out / "one_step" / "metrics.json").read_text())["seg_miou"]
    fcn_metrics = json.loads((out / "fcn" / "metrics.json").read_text())
    assert metrics["two_step_miou"] == fcn_metrics["seg_miou"]
    assert metrics["two_step_crf_miou"] == fcn_metrics["seg_crf_miou"]
    assert metrics["pseudo_label_miou"] == pytest.approx(pseudo_label_miou(out / "pseudo_labels", data_root, "train"))
    assert _state(out / "fcn" / "last.pth")["step"] == 2
    assert "two-step mIoU (val)" in first_output
    stamp = (out / "fcn" / "last.pth").stat().st_mtime_ns
    assert train_main(arguments) == 0
    second_output = capsys.readouterr().out
    assert second_output.count("finished earlier, skipped") == 2
    assert "6 already done, 0 to predict" in second_output
    assert (out / "fcn" / "last.pth").stat().st_mtime_ns == stamp
