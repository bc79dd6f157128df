"""tools/gpu_check.sh and tools/gpu_check.py, as far as they run without a GPU: the shell script
is valid and refuses to start without one, and the measurements and the table work on the CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from gpu_check import format_table, read_rows  # noqa: E402


def test_the_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(ROOT / "tools" / "gpu_check.sh")], check=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: gpu_check.sh would build and run")
def test_the_script_exits_2_without_a_gpu(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "tools" / "gpu_check.sh")], capture_output=True, text=True,
                            env={**os.environ, "RRM_GPU_CHECK_ROWS": str(tmp_path / "rows.tsv")}, timeout=120)
    assert result.returncode == 2
    assert "nvcc is not on the PATH" in result.stderr or "no usable GPU" in result.stderr


def test_the_table_aligns_the_rows_under_the_header(tmp_path):
    rows = tmp_path / "rows.tsv"
    rows.write_text("build with CUDA (sm 80)\tok\t212 s\t-\ndense CRF\tmeasured\t12.5 ms\t4\n\nshort\tok\n")
    lines = format_table(read_rows(rows)).splitlines()
    assert lines[0].split() == ["what", "result", "time", "host", "syncs"] and set(lines[1]) == {"-", " "}
    assert lines[3].split() == ["dense", "CRF", "measured", "12.5", "ms", "4"]
    assert lines[4].split() == ["short", "ok"]
    assert lines[0].index("result") == lines[2].index("ok") == lines[3].index("measured")
    assert lines[0].index("host syncs") == lines[3].rindex("4")


def test_measure_on_the_cpu_writes_a_row_per_measurement(tmp_path):
    rows = tmp_path / "rows.tsv"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "measure", "--device", "cpu",
                             "--quick", "--rows", str(rows)], capture_output=True, text=True, cwd=tmp_path,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    measured = read_rows(rows)
    assert [row[0].split()[0] for row in measured] == ["dense", "pydensecrf,", "dense", "reliable", "training"]
    for what, outcome, time, syncs in measured:
        assert outcome == "measured" and time.endswith(" ms") and float(time.split()[0]) > 0
        assert syncs == "-"  # counted on CUDA only


def test_small_case_runs_every_op_on_the_cpu():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "small-case", "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "small case ran on cpu" in result.stdout
