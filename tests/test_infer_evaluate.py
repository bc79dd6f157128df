"""The inference and evaluation CLIs (rrm.infer, rrm.evaluate) on a tiny synthetic dataset
with an untrained small-backbone RRM: output files, checkpoint formats, test-time
augmentation, resuming, the VOC submission layout, scores and error messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rrm.training.checkpoint import save_checkpoint
from rrm.training.config import TrainConfig
from rrm.data import read_mask, voc_palette, write_mask
from rrm.data import generate_synthetic_dataset
from rrm.evaluate import main as evaluate_main
from rrm.evaluation.model_loading import load_segmentation_model
from rrm.evaluation.prediction import segmentation_probabilities
from rrm.evaluation.prediction_files import SUBMISSION_DIR, same_size_batches
from rrm.evaluation.scoring import CLASS_NAMES, evaluate_files
from rrm.infer import main as infer_main
from rrm.models import build_deeplab, build_rrm
from rrm.utils.errors import CheckpointError

REPO_ROOT = Path(__file__).resolve().parents[1]
N_VAL = 4


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A synthetic VOC-layout dataset of 4 val images (about 40x38, sizes differ), plus a
    ``test`` list naming the same images, as VOC's test split has no masks to read."""
    root = generate_synthetic_dataset(tmp_path_factory.mktemp("data") / "voc", n_train=1, n_val=N_VAL, size=40, seed=0)
    lists = root / "ImageSets" / "Segmentation"
    shutil.copy(lists / "val.txt", lists / "test.txt")
    return root


@pytest.fixture(scope="module")
def val_names(data_root) -> list[str]:
    return (data_root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_rrm("small").eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, network) -> dict[str, Path]:
    """The same weights as an rrm training checkpoint and as a plain state dict."""
    folder = tmp_path_factory.mktemp("checkpoints")
    save_checkpoint(folder / "last.pth", network, torch.optim.Adam(network.parameters()), 7,
                    TrainConfig(backbone="small"), torch.device("cpu"), {}, 0.0)
    torch.save(network.state_dict(), folder / "plain.pth")
    return {"training": folder / "last.pth", "plain": folder / "plain.pth"}


def run_infer(checkpoint: Path, data_root: Path, out: Path, *extra: str) -> int:
    return infer_main(["--checkpoint", str(checkpoint), "--data-root", str(data_root), "--out", str(out),
                       "--device", "cpu", *extra])


def read_masks(folder: Path, names: list[str]) -> dict[str, np.ndarray]:
    return {name: np.asarray(Image.open(folder / f"{name}.png")) for name in names}


def assert_mask_is_argmax(mask: np.ndarray, probabilities: np.ndarray) -> None:
    """The mask (argmax of float32 probabilities) picks a top class of the stored float16
    probabilities ``[L, H, W]`` up to float16 rounding (an untrained net has many near-ties)."""
    chosen = np.take_along_axis(probabilities.astype(np.float32), mask[None].astype(np.int64), axis=0)[0]
    assert (chosen >= probabilities.astype(np.float32).max(axis=0) - 1e-3).all()


def single_error_line(captured) -> str:
    """The CLI's stderr, checked to be one ``error:`` line without a traceback."""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


# --- inference outputs --------------------------------------------------------------------


def test_infer_writes_palette_masks_and_probabilities(tmp_path, data_root, val_names, checkpoints):
    out = tmp_path / "pred"
    assert run_infer(checkpoints["training"], data_root, out, "--save-probs", "--batch-size", "3") == 0
    for name in val_names:
        with Image.open(data_root / "JPEGImages" / f"{name}.jpg") as image:
            width, height = image.size
        with Image.open(out / f"{name}.png") as mask_image:
            assert mask_image.mode == "P"
            assert mask_image.size == (width, height)
            assert np.array_equal(np.asarray(mask_image.getpalette(), dtype=np.uint8).reshape(-1, 3), voc_palette())
            mask = np.asarray(mask_image)
        assert mask.max() <= 20
        probabilities = np.load(out / "probs" / f"{name}.npy")
        assert probabilities.dtype == np.float16 and probabilities.shape == (21, height, width)
        np.testing.assert_allclose(probabilities.astype(np.float32).sum(axis=0), 1.0, atol=1e-2)
        assert_mask_is_argmax(mask, probabilities)
    assert not list(out.rglob(".*.tmp*")), "temporary files left behind"


def test_plain_state_dict_and_training_checkpoint_give_the_same_masks(tmp_path, data_root, val_names, checkpoints):
    assert run_infer(checkpoints["training"], data_root, tmp_path / "a") == 0
    assert run_infer(checkpoints["plain"], data_root, tmp_path / "b", "--backbone", "small") == 0
    first, second = read_masks(tmp_path / "a", val_names), read_masks(tmp_path / "b", val_names)
    assert all(np.array_equal(first[name], second[name]) for name in val_names)


def test_batching_does_not_change_masks(tmp_path, data_root, val_names, checkpoints):
    assert run_infer(checkpoints["plain"], data_root, tmp_path / "one", "--batch-size", "1") == 0
    assert run_infer(checkpoints["plain"], data_root, tmp_path / "many", "--batch-size", "4") == 0
    single, batched = read_masks(tmp_path / "one", val_names), read_masks(tmp_path / "many", val_names)
    assert all(np.array_equal(single[name], batched[name]) for name in val_names)


def test_same_size_batches_group_by_size_in_list_order(tmp_path):
    sizes = [(30, 20), (24, 20), (30, 20), (30, 20), (24, 20)]
    paths = []
    for index, (width, height) in enumerate(sizes):
        paths.append(tmp_path / f"{index}.jpg")
        Image.new("RGB", (width, height)).save(paths[-1])
    assert same_size_batches(paths, 2) == [[0, 2], [3], [1, 4]]


def test_flip_and_scales_run(tmp_path, data_root, val_names, checkpoints, capsys):
    out = tmp_path / "tta"
    augmentation = ["--flip", "--scales", "1,0.5,1.5", "--batch-size", "2"]
    assert run_infer(checkpoints["training"], data_root, out, *augmentation) == 0
    assert all(mask.max() <= 20 for mask in read_masks(out, val_names).values())
    assert f"[{N_VAL}/{N_VAL}]" in capsys.readouterr().out


def test_flip_averaging_is_mirror_equivariant(network):
    images = torch.randn(2, 3, 24, 32)
    direct = segmentation_probabilities(network, images, scales=(1.0, 0.75), flip=True)
    mirrored = segmentation_probabilities(network, images.flip(-1), scales=(1.0, 0.75), flip=True)
    torch.testing.assert_close(mirrored, direct.flip(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(direct.sum(dim=1), torch.ones(2, 24, 32))


def test_single_scale_probabilities_are_the_softmax_of_upsampled_logits(network):
    images = torch.randn(1, 3, 20, 28)
    with torch.no_grad():
        logits = torch.nn.functional.interpolate(network(images)["seg_logits"], size=(20, 28), mode="bilinear",
                                                 align_corners=False)
    torch.testing.assert_close(segmentation_probabilities(network, images), logits.softmax(dim=1))


def test_infer_via_python_m_then_evaluate(tmp_path, data_root, checkpoints):
    """The documented command lines, in fresh interpreters."""
    out = tmp_path / "pred"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    infer = subprocess.run(
        [sys.executable, "-m", "rrm.infer", "--checkpoint", str(checkpoints["training"]), "--data-root", str(data_root),
         "--split", "val", "--out", str(out), "--device", "cpu"],
        capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=120,
    )
    assert infer.returncode == 0, infer.stderr
    evaluate = subprocess.run(
        [sys.executable, "-m", "rrm.evaluate", "--pred", str(out), "--data-root", str(data_root), "--split", "val",
         "--json", str(tmp_path / "scores.json")],
        capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=120,
    )
    assert evaluate.returncode == 0, evaluate.stderr
    assert "mIoU" in evaluate.stdout and "aeroplane" in evaluate.stdout
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert 0.0 <= scores["miou"] <= 1.0 and scores["num_images"] == N_VAL
    assert list(scores["iou"]) == list(CLASS_NAMES)


# --- resuming -----------------------------------------------------------------------------


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, data_root, val_names, checkpoints, capsys):
    out = tmp_path / "pred"
    assert run_infer(checkpoints["plain"], data_root, out) == 0
    predicted = read_masks(out, val_names)
    sentinel = np.zeros_like(predicted[val_names[0]])
    sentinel[0, 0] = 20  # unlike any prediction of the network, so a rewrite would show
    write_mask(out / f"{val_names[0]}.png", sentinel)
    (out / f"{val_names[1]}.png").unlink()
    capsys.readouterr()

    assert run_infer(checkpoints["plain"], data_root, out) == 0
    assert f"{N_VAL - 1} already done, 1 to predict" in capsys.readouterr().out
    resumed = read_masks(out, val_names)
    assert np.array_equal(resumed[val_names[0]], sentinel)
    assert np.array_equal(resumed[val_names[1]], predicted[val_names[1]])

    assert run_infer(checkpoints["plain"], data_root, out, "--overwrite") == 0
    assert np.array_equal(read_masks(out, val_names)[val_names[0]], predicted[val_names[0]])


def test_missing_probabilities_are_redone_with_save_probs(tmp_path, data_root, val_names, checkpoints, capsys):
    out = tmp_path / "pred"
    assert run_infer(checkpoints["plain"], data_root, out) == 0
    capsys.readouterr()
    assert run_infer(checkpoints["plain"], data_root, out, "--save-probs") == 0
    assert f"0 already done, {N_VAL} to predict" in capsys.readouterr().out
    assert all((out / "probs" / f"{name}.npy").is_file() for name in val_names)


# --- VOC test submission ------------------------------------------------------------------


def test_voc_submission_layout_for_the_test_split(tmp_path, data_root, val_names, checkpoints, capsys):
    out = tmp_path / "submission"
    assert run_infer(checkpoints["plain"], data_root, out, "--split", "test", "--voc-submission") == 0
    folder = out / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls"
    assert folder == out / SUBMISSION_DIR
    assert sorted(path.stem for path in folder.glob("*.png")) == sorted(val_names)
    assert all(Image.open(path).mode == "P" for path in folder.glob("*.png"))
    assert [path.name for path in out.iterdir()] == ["results"]
    assert "tar czf results.tgz results" in capsys.readouterr().out


# --- dense CRF ----------------------------------------------------------------------------


def test_crf_refinement_writes_masks_and_marginals(tmp_path, data_root, val_names, checkpoints):
    out = tmp_path / "crf"
    assert run_infer(checkpoints["plain"], data_root, out, "--crf", "--save-probs", "--batch-size", "2") == 0
    for name, mask in read_masks(out, val_names).items():
        probabilities = np.load(out / "probs" / f"{name}.npy").astype(np.float32)
        np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-2)
        assert_mask_is_argmax(mask, probabilities)


# --- checkpoint loading -------------------------------------------------------------------


def test_loader_reads_deeplab_and_data_parallel_state_dicts(tmp_path):
    torch.manual_seed(0)
    deeplab = build_deeplab("small")
    torch.save({"state_dict": {f"module.{key}": value for key, value in deeplab.state_dict().items()}},
               tmp_path / "deeplab.pth")
    model = load_segmentation_model(tmp_path / "deeplab.pth")
    assert (model.kind, model.backbone, model.num_classes) == ("deeplab", "small", 20)
    images = torch.randn(1, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(model.network(images)["seg_logits"], deeplab.eval()(images)["seg_logits"])


def test_loader_infers_backbone_and_classes_from_keys(tmp_path):
    torch.manual_seed(0)
    torch.save(build_rrm("small", num_classes=5).state_dict(), tmp_path / "five.pth")
    model = load_segmentation_model(tmp_path / "five.pth")
    assert (model.kind, model.backbone, model.num_classes) == ("rrm", "small", 5)


def test_loader_reads_rrm_final_keys_as_resnet38(tmp_path):
    """RRM's published RRM_final.pth is a plain state dict with PSA's ResNet-38 names; a
    stand-in with two of its keys is recognised as such (and then fails the full check)."""
    torch.save({"conv1a.weight": torch.zeros(64, 3, 3, 3), "fc8_seg_conv2.weight": torch.zeros(21, 512, 3, 3)},
               tmp_path / "RRM_final.pth")
    with pytest.raises(CheckpointError, match=r"does not fit rrm with backbone 'resnet38': \d+ missing keys"):
        load_segmentation_model(tmp_path / "RRM_final.pth")


def test_loader_rejects_a_classification_only_network(tmp_path):
    torch.save(build_rrm("small", seg_head=False).state_dict(), tmp_path / "cls.pth")
    with pytest.raises(CheckpointError, match="no segmentation branch"):
        load_segmentation_model(tmp_path / "cls.pth")


# --- bad arguments ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing data root", "dataset root does not exist"),
        ("missing checkpoint", "checkpoint not found"),
        ("corrupt checkpoint", "not a loadable PyTorch file"),
        ("unknown backbone", "unknown RRM backbone 'resnet50'"),
        ("wrong backbone", "does not fit rrm with backbone 'resnet38'"),
        ("unknown split", "image list not found"),
        ("cuda without a GPU", "CUDA is not available"),
    ],
)
def test_infer_bad_arguments_give_one_line_errors(tmp_path, data_root, checkpoints, capsys, case, expected):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    checkpoint, root, extra = checkpoints["plain"], data_root, []
    if case == "missing data root":
        root = tmp_path / "no-such-dataset"
    elif case == "missing checkpoint":
        checkpoint = tmp_path / "no-such.pth"
    elif case == "corrupt checkpoint":
        checkpoint = corrupt
    elif case == "unknown backbone":
        extra = ["--backbone", "resnet50"]
    elif case == "wrong backbone":
        extra = ["--backbone", "resnet38"]
    elif case == "unknown split":
        extra = ["--split", "nonsense"]
    elif case == "cuda without a GPU":
        if torch.cuda.is_available():
            pytest.skip("a GPU is present")
        extra = ["--device", "cuda"]
    assert run_infer(checkpoint, root, tmp_path / "out", *extra) == 2
    assert expected in single_error_line(capsys.readouterr())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argument", [["--scales", "1,x"], ["--scales", "1,0"], ["--batch-size", "0"]])
def test_infer_rejects_bad_option_values(tmp_path, data_root, checkpoints, capsys, argument):
    with pytest.raises(SystemExit) as exit_info:
        run_infer(checkpoints["plain"], data_root, tmp_path / "out", *argument)
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


# --- evaluation ---------------------------------------------------------------------------


def copy_ground_truth(data_root: Path, names: list[str], out: Path) -> None:
    out.mkdir()
    for name in names:
        shutil.copy(data_root / "SegmentationClass" / f"{name}.png", out / f"{name}.png")


def test_ground_truth_as_prediction_scores_one(tmp_path, data_root, val_names, capsys):
    copy_ground_truth(data_root, val_names, tmp_path / "gt")
    assert evaluate_main(["--pred", str(tmp_path / "gt"), "--data-root", str(data_root),
                          "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["miou"] == 1.0 and scores["pixel_accuracy"] == 1.0 and scores["mean_accuracy"] == 1.0
    present = {name for name in CLASS_NAMES if scores["iou"][name] is not None}
    assert "background" in present
    assert all(scores["iou"][name] == 1.0 for name in present)
    assert scores["iou"]["tvmonitor"] is None  # the synthetic data never uses class 20
    assert "100.00" in capsys.readouterr().out


def test_predicted_ignore_counts_as_a_miss(tmp_path, data_root, val_names):
    copy_ground_truth(data_root, val_names, tmp_path / "pred")
    path = tmp_path / "pred" / f"{val_names[0]}.png"
    mask = read_mask(path)
    holes = mask != 255
    holes[::2] = False  # blank out every other row of the counted pixels
    mask[holes] = 255
    write_mask(path, mask)
    truth_paths = [data_root / "SegmentationClass" / f"{name}.png" for name in val_names]
    report = evaluate_files([tmp_path / "pred" / f"{name}.png" for name in val_names], truth_paths)
    assert report.ignored_predictions == int(holes.sum())
    counted = sum(int((read_mask(p) != 255).sum()) for p in truth_paths)
    assert report.pixel_accuracy == pytest.approx(1 - holes.sum() / counted)
    assert report.miou < 1.0


def test_evaluate_names_missing_predictions(tmp_path, data_root, val_names, capsys):
    copy_ground_truth(data_root, val_names, tmp_path / "pred")
    for name in val_names[1:3]:
        (tmp_path / "pred" / f"{name}.png").unlink()
    assert evaluate_main(["--pred", str(tmp_path / "pred"), "--data-root", str(data_root)]) == 2
    line = single_error_line(capsys.readouterr())
    assert f"2 of {N_VAL} predictions missing" in line
    assert all(f"{name}.png" in line for name in val_names[1:3])


def test_evaluate_names_size_mismatch(tmp_path, data_root, val_names, capsys):
    copy_ground_truth(data_root, val_names, tmp_path / "pred")
    truth = read_mask(tmp_path / "pred" / f"{val_names[2]}.png")
    write_mask(tmp_path / "pred" / f"{val_names[2]}.png", np.zeros((truth.shape[0] + 3, truth.shape[1]), np.uint8))
    assert evaluate_main(["--pred", str(tmp_path / "pred"), "--data-root", str(data_root)]) == 2
    line = single_error_line(capsys.readouterr())
    height, width = truth.shape
    assert f"{val_names[2]}.png is {width}x{height + 3}" in line and f"is {width}x{height}" in line


@pytest.mark.parametrize("case", ["missing prediction folder", "missing data root", "bad prediction values"])
def test_evaluate_bad_inputs_give_one_line_errors(tmp_path, data_root, val_names, capsys, case):
    copy_ground_truth(data_root, val_names, tmp_path / "pred")
    pred, root, expected = tmp_path / "pred", data_root, ""
    if case == "missing prediction folder":
        pred, expected = tmp_path / "nothing", "prediction folder not found"
    elif case == "missing data root":
        root, expected = tmp_path / "no-such-dataset", "dataset root does not exist"
    else:
        write_mask(pred / f"{val_names[0]}.png", np.full((4, 4), 40, np.uint8))
        expected = "holds values [40]"
    assert evaluate_main(["--pred", str(pred), "--data-root", str(root)]) == 2
    assert expected in single_error_line(capsys.readouterr())
