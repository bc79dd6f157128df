"""The training CLI end to end on a tiny generated dataset (a few steps, CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rrm.data import generate_synthetic_dataset
from rrm.train import main

TINY = ["--max-steps", "4", "--batch-size", "2", "--crop-size", "48", "--cls-only-steps", "1",
        "--num-workers", "0", "--val-every", "0", "--checkpoint-every", "2", "--log-every", "1",
        "--cam-scales", "1,0.5", "--panel-images", "2"]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("data") / "voc", n_train=8, n_val=3, size=48, seed=1)


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_few_steps_write_the_run_folder(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    assert main(["--data-root", str(tiny_dataset), "--out", str(out), *TINY]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("cam_miou", "reliable_precision", "reliable_coverage", "seg_miou", "wall_time_s", "steps"):
        assert key in metrics
    assert metrics["steps"] == 4
    assert 0.0 <= metrics["seg_miou"] <= 1.0
    assert 0.0 <= metrics["seg_crf_miou"] <= 1.0
    assert (out / "config.yaml").is_file()
    assert _state(out / "last.pth")["step"] == 4
    records = [json.loads(line, parse_constant=_refuse_non_standard)
               for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/dense" in record for record in records)
    final = records[-1]
    assert final["final/steps"] == 4 and not any(key.startswith("val/") for key in final)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((out / "panels").glob("*.png"))


def _refuse_non_standard(name: str):
    raise ValueError(f"metrics.jsonl holds {name}, which is not JSON")


def test_cls_only_run_logs_null_for_undefined_label_quality(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--data-root", str(tiny_dataset), "--out", str(out), *TINY, "--max-steps", "2",
                 "--cls-only-steps", "2", "--val-every", "1"]) == 0
    text = (out / "metrics.jsonl").read_text()
    assert "NaN" not in text
    records = [json.loads(line, parse_constant=_refuse_non_standard) for line in text.splitlines()]
    assert records[-1]["final/reliable_precision"] is None
    printed = capsys.readouterr().out
    order = [f"dataset: {tiny_dataset}", "step 1/2", "validation at step 1:", "step 2/2", "final metrics",
             "\n  reliable_precision", f"run folder: {out}"]
    positions = [printed.find(line) for line in order]
    assert -1 not in positions and positions == sorted(positions), printed


def test_resumed_run_ends_with_the_same_parameters(tiny_dataset, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["--data-root", str(tiny_dataset), "--out", str(straight), *TINY]) == 0
    assert main(["--data-root", str(tiny_dataset), "--out", str(resumed), *TINY, "--stop-at", "3"]) == 0
    assert _state(resumed / "last.pth")["step"] == 3
    assert main(["--resume", str(resumed / "last.pth")]) == 0
    expected, actual = _state(straight / "last.pth"), _state(resumed / "last.pth")
    assert actual["step"] == 4
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, actual["model"][name]), name
    # The label-quality counters travel in the checkpoint: the same final metrics, bar the time.
    straight_metrics = json.loads((straight / "metrics.json").read_text())
    resumed_metrics = json.loads((resumed / "metrics.json").read_text())
    straight_metrics.pop("wall_time_s"), resumed_metrics.pop("wall_time_s")
    assert resumed_metrics == straight_metrics
    assert straight_metrics["reliable_precision"] is not None


def test_two_process_torchrun_keeps_ranks_in_sync(tiny_dataset, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
               "-m", "rrm.train", "--data-root", str(tiny_dataset), "--out", str(out), *TINY, "--batch-size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2
    assert metrics["ranks_in_sync"] is True
    assert [p.name for p in out.glob("*.pth")] == ["last.pth"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--data-root", "/nonexistent/voc"], "/nonexistent/voc"),
        (["--resume", "/nonexistent/last.pth"], "checkpoint not found: /nonexistent/last.pth"),
        (["--backbone", "vgg"], "unknown RRM backbone"),
        (["--weights", "/nonexistent/w.pth"], "not found"),
        (["--max-steps", "0"], "max_steps must be > 0"),
    ],
)
def test_bad_arguments_give_clear_errors(tiny_dataset, tmp_path, arguments, message):
    base = ["--data-root", str(tiny_dataset), "--out", str(tmp_path / "run"), *TINY]
    result = subprocess.run([sys.executable, "-m", "rrm.train", *base, *arguments], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    corrupt = tmp_path / "last.pth"
    corrupt.write_bytes(os.urandom(256))
    result = subprocess.run([sys.executable, "-m", "rrm.train", "--resume", str(corrupt)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert "not a loadable PyTorch file" in result.stderr
    assert "Traceback" not in result.stderr


def test_crf_validation_equals_infer_then_evaluate(tiny_dataset, tmp_path):
    from rrm.evaluate import main as evaluate_main
    from rrm.infer import main as infer_main

    out = tmp_path / "run"
    assert main(["--data-root", str(tiny_dataset), "--out", str(out), *TINY, "--crf-val-scales", "1,1.5,2"]) == 0
    predictions = tmp_path / "pred"
    assert infer_main(["--checkpoint", str(out / "last.pth"), "--data-root", str(tiny_dataset), "--split", "val",
                       "--out", str(predictions), "--crf", "--flip", "--scales", "1,1.5,2", "--batch-size", "1"]) == 0
    assert evaluate_main(["--pred", str(predictions), "--data-root", str(tiny_dataset), "--split", "val",
                          "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seg_crf_miou"] == pytest.approx(scores["miou"], abs=1e-9)
