"""Checkpoints and the command lines that read them: the stage they carry, the one checked
load (structure, stage, shapes, finiteness), resuming a finished run, stale temporary files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rrm.data import generate_synthetic_dataset
from rrm.infer import main as infer_main
from rrm.models.weights import load_checkpoint
from rrm.pseudo_labels import main as pseudo_labels_main
from rrm.train import main as train_main
from rrm.training.checkpoint import save_checkpoint
from rrm.training.config import TrainConfig
from rrm.utils.errors import CheckpointError

TINY = ["--max-steps", "2", "--batch-size", "2", "--crop-size", "48", "--cls-only-steps", "1",
        "--num-workers", "0", "--val-every", "0", "--log-every", "1", "--cam-scales", "1,0.5",
        "--panel-images", "1", "--crf-val-scales", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny dataset, a finished one-step run and a finished step-2 run on it."""
    base = tmp_path_factory.mktemp("runs")
    data = generate_synthetic_dataset(base / "voc", n_train=4, n_val=2, size=48, seed=3)
    assert train_main(["--data-root", str(data), "--out", str(base / "rrm"), *TINY]) == 0
    assert train_main(["--data-root", str(data), "--out", str(base / "fcn"), *TINY, "--stage", "fcn",
                       "--pseudo-labels", str(data / "SegmentationClass")]) == 0
    return {"data": data, "rrm": base / "rrm", "fcn": base / "fcn"}


def run_cli(module: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *arguments], capture_output=True, text=True, timeout=300)


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_checkpoints_carry_their_stage(runs):
    assert load_checkpoint(runs["rrm"] / "last.pth")["stage"] == "rrm"
    assert load_checkpoint(runs["fcn"] / "last.pth")["stage"] == "fcn"


def test_resuming_a_finished_run_leaves_its_files_byte_identical(runs):
    folder = runs["rrm"]
    before = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    result = run_cli("rrm.train", "--resume", str(folder / "last.pth"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "finished at step 2 of 2" in result.stdout and "left as they are" in result.stdout
    after = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    assert after == before


@pytest.mark.parametrize("module, stage, other", [("rrm.train", "rrm", "fcn"), ("rrm.train", "fcn", "rrm")])
def test_train_refuses_to_resume_a_checkpoint_of_the_other_stage(runs, module, stage, other):
    extra = ["--pseudo-labels", str(runs["data"] / "SegmentationClass")] if stage == "fcn" else []
    result = run_cli(module, "--stage", stage, *extra, "--resume", str(runs[other] / "last.pth"))
    assert_one_error_line(result, str(runs[other] / "last.pth"), f"of stage {other!r}", f"expected stage {stage!r}")


def test_train_refuses_weights_of_the_other_stage(runs, tmp_path):
    result = run_cli("rrm.train", "--data-root", str(runs["data"]), "--out", str(tmp_path / "w"), *TINY,
                     "--weights", str(runs["fcn"] / "last.pth"))
    assert_one_error_line(result, "of stage 'fcn'", "expected stage 'rrm'")


def test_pseudo_labels_refuses_a_step_2_checkpoint(runs, tmp_path):
    result = run_cli("rrm.pseudo_labels", "--checkpoint", str(runs["fcn"] / "last.pth"),
                     "--data-root", str(runs["data"]), "--out", str(tmp_path / "pseudo"))
    assert_one_error_line(result, "of stage 'fcn'", "expected stage 'rrm'")
    assert not (tmp_path / "pseudo").exists()


def test_infer_takes_either_stage(runs, tmp_path, capsys):
    for stage in ("rrm", "fcn"):
        assert infer_main(["--checkpoint", str(runs[stage] / "last.pth"), "--data-root", str(runs["data"]),
                           "--out", str(tmp_path / stage), "--device", "cpu"]) == 0
        assert len(list((tmp_path / stage).glob("*.png"))) == 2


def damaged(runs: dict[str, Path], tmp_path: Path, change) -> Path:
    payload = torch.load(runs["rrm"] / "last.pth", weights_only=True)
    change(payload)
    path = tmp_path / "damaged" / "last.pth"
    path.parent.mkdir()
    torch.save(payload, path)
    return path


def first_weight(payload: dict) -> torch.Tensor:
    return next(value for value in payload["model"].values() if value.is_floating_point())


@pytest.mark.parametrize("change, fragment", [
    (lambda p: p.pop("model"), "entry 'model' is missing"),
    (lambda p: p.__setitem__("config", "text"), "entry 'config' is a str"),
    (lambda p: p.__setitem__("step", 1.5), "entry 'step' is a float"),
    (lambda p: first_weight(p).fill_(float("nan")), "holds NaN or infinite values"),
    (lambda p: next(iter(p["optimizer"]["state"].values()))["exp_avg"].fill_(float("inf")),
     "optimizer.state.0.exp_avg holds NaN or infinite values"),
])
def test_damaged_checkpoints_give_one_error_line_naming_the_file(runs, tmp_path, capsys, change, fragment):
    path = damaged(runs, tmp_path, change)
    assert train_main(["--resume", str(path)]) == 2
    assert pseudo_labels_main(["--checkpoint", str(path), "--data-root", str(runs["data"]),
                               "--out", str(tmp_path / "pseudo")]) == 2
    assert infer_main(["--checkpoint", str(path), "--data-root", str(runs["data"]),
                       "--out", str(tmp_path / "pred")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        assert line.startswith(f"error: checkpoint {path}") and fragment in line, line
    assert not (tmp_path / "pseudo").exists() and not (tmp_path / "pred").exists()


def test_wrong_shaped_weights_give_one_error_line(runs, tmp_path, capsys):
    path = damaged(runs, tmp_path, lambda p: p["model"].__setitem__(
        next(iter(p["model"])), torch.zeros(1, 1, 1, 1)))
    assert train_main(["--resume", str(path), "--max-steps", "3", "--out", str(tmp_path / "resumed")]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"error: checkpoint {path} does not fit") and "1 shape mismatches" in line
    assert "\n" not in line


def test_a_save_removes_stale_temporary_files(tmp_path):
    path = tmp_path / "run" / "last.pth"
    path.parent.mkdir()
    stale = path.parent / ".last.4242-deadbeef.tmp.pth"
    stale.write_bytes(b"left by a writer killed during its save")
    other = path.parent / ".metrics.1-2.tmp.json"
    other.write_text("{}")
    network = torch.nn.Linear(2, 2)
    save_checkpoint(path, network, torch.optim.SGD(network.parameters(), lr=0.1), 1, TrainConfig(),
                    torch.device("cpu"), {}, 0.0)
    assert not stale.exists()
    assert other.exists()
    assert load_checkpoint(path)["step"] == 1


def test_load_checkpoint_checks_the_stage(runs):
    with pytest.raises(CheckpointError, match="is of stage 'rrm', expected stage 'fcn'"):
        load_checkpoint(runs["rrm"] / "last.pth", stage="fcn")


def test_final_metrics_json_is_strict(runs):
    for stage in ("rrm", "fcn"):
        json.loads((runs[stage] / "metrics.json").read_text(), parse_constant=_refuse)


def _refuse(name: str):
    raise ValueError(f"not strict JSON: {name}")
