"""tools/benchmark_table.py: tables from pytest-benchmark JSON runs, written into the marked block
of docs/benchmarks.md without touching the rest of the file."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("benchmark_table", ROOT / "tools" / "benchmark_table.py")
benchmark_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark_table)


def fake_run(path: Path, scale: float, date: str) -> Path:
    """A JSON run in pytest-benchmark's layout: every benchmark the tables read, ours 10 ms and
    every baseline `scale` times slower (the lattice sizes grow 4x per step)."""
    names = {}
    for test in benchmark_table.LATTICE_ROWS.values():
        for i, size in enumerate(benchmark_table.LATTICE_SIZES):
            names[f"{test}[{size}]"] = 0.001 * 4**i
    for _, ours, baseline in benchmark_table.COMPARISONS + benchmark_table.CRF_RUNS:
        names[ours] = 0.010
        names[baseline] = 0.010 * scale
    run = {
        "datetime": f"{date}T10:00:00",
        "machine_info": {"cpu": {"brand_raw": "Test CPU"}, "python_version": "3.11.7", "torch_version": "2.13.0",
                         "torch_threads": 2, "cpu_count": 2},
        "benchmarks": [{"name": name, "stats": {"min": seconds}} for name, seconds in names.items()],
    }
    path.write_text(json.dumps(run))
    return path


def test_write_replaces_only_the_marked_block(tmp_path):
    doc = tmp_path / "benchmarks.md"
    before, after = "# Title\n\nintro\n\n", "\n\n## Later section\n\ntext\n"
    doc.write_text(f"{before}{benchmark_table.BEGIN_MARKER}\nold tables\n{benchmark_table.END_MARKER}{after}")
    scales = (4.0, 5.0, 7.0)
    runs = [fake_run(tmp_path / f"run{i}.json", scale, f"2026-12-0{i + 1}") for i, scale in enumerate(scales)]
    assert benchmark_table.main(["--write", str(doc), *map(str, runs)]) == 0
    text = doc.read_text()
    assert text.startswith(before + benchmark_table.BEGIN_MARKER + "\n")
    assert text.endswith(benchmark_table.END_MARKER + after)
    assert "old tables" not in text
    assert "Measured on 2026-12-01 to 2026-12-03: 3 runs on Test CPU (2 cores)" in text
    assert "torch 2.13.0, 2 threads" in text
    assert "| one image, L = 21 | 4.00, 5.00, 7.00 | 5.00× |" in text
    assert "| 4.0×–7.0× |" in text  # a comparison's ratio range
    assert "| 16.0× |" in text  # 642² / 161² of the lattice rows, equal in every run


def test_write_needs_both_markers(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("no markers here\n")
    run = fake_run(tmp_path / "run.json", 3.0, "2026-12-01")
    with pytest.raises(ValueError, match="benchmark-tables:begin"):
        benchmark_table.main(["--write", str(doc), str(run)])
    assert doc.read_text() == "no markers here\n"


def test_benchmarks_doc_has_the_markers_in_order():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    assert text.count(benchmark_table.BEGIN_MARKER) == 1 and text.count(benchmark_table.END_MARKER) == 1
    assert text.index(benchmark_table.BEGIN_MARKER) < text.index(benchmark_table.END_MARKER)
