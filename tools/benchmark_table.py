"""Summarise pytest-benchmark JSON runs into the tables of docs/benchmarks.md.

    for i in 1 2 3; do python -m pytest benchmarks --benchmark-only --benchmark-json=run$i.json; done
    python tools/benchmark_table.py run1.json run2.json run3.json                 # print the tables
    python tools/benchmark_table.py --write docs/benchmarks.md run*.json          # replace its block

Every baseline is compared with the op timed in the same run; each cell gives the range over the
runs of the minimum over rounds, each ratio the range of the per-run ratios. The dense CRF rows
also get their per-run ratios and median. ``--write`` replaces the text between the two marker
lines of the file (``BEGIN_MARKER``, ``END_MARKER``) and leaves the rest of it alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

BEGIN_MARKER = "<!-- benchmark-tables:begin (written by tools/benchmark_table.py --write) -->"
END_MARKER = "<!-- benchmark-tables:end -->"

LATTICE_SIZES = (161, 321, 642)
LATTICE_ROWS = {
    "d = 5 bilateral (σxy 80, σrgb 13)": "test_bilateral_build_and_filter",
    "d = 2 Gaussian (σ 3)": "test_gaussian_build_and_filter",
}
# (batch, labels, Gaussian lattice rebuilt every call) of the dense CRF benchmarks.
CRF_CASES = [(batch, labels, cold) for batch in (1, 4) for labels in (3, 21) for cold in (False, True)]


def crf_benchmarks(batch: int, labels: int, cold: bool) -> tuple[str, str]:
    """The names of our dense CRF benchmark of a case and of its pydensecrf baseline."""
    return (
        f"test_dense_crf[{batch}-{labels}-rrm_ops{'_cold' if cold else ''}]",
        f"test_dense_crf[{batch}-{labels}-pydensecrf]",
    )


# (label, ours, baseline)
COMPARISONS = [
    (
        "lattice filter, C = 21, 321², one pass vs per-channel loop (lattice prebuilt)",
        "test_all_channels_vs_per_channel_loop[all_channels]",
        "test_all_channels_vs_per_channel_loop[per_channel_loop]",
    ),
    *[
        (
            f"dense CRF {'4 × ' if batch == 4 else ''}321², 10 it., L = {labels}, vs pydensecrf"
            f"{' per image' if batch == 4 else ''}{' (Gaussian lattice rebuilt every call)' if cold else ''}",
            *crf_benchmarks(batch, labels, cold),
        )
        for batch, labels, cold in CRF_CASES
    ],
    (
        "dense energy loss fwd+bwd, N = 4, K = 21, 321², vs per-image per-class loop",
        "test_dense_energy_loss_forward_backward[rrm_ops]",
        "test_dense_energy_loss_forward_backward[per_image_per_class_loop]",
    ),
    (
        "the same without the input value checks (`check_values=False`)",
        "test_dense_energy_loss_forward_backward[rrm_ops_no_value_checks]",
        "test_dense_energy_loss_forward_backward[per_image_per_class_loop]",
    ),
    *[
        (
            f"pydensecrf API via rrm_ops.compat, 321², 10 it., L = {labels}, {compat} bilateral compat, "
            f"vs pydensecrf{' (rrm_ops.dense_crf for comparison)' if ours == 'dense_crf' else ''}",
            f"test_pydensecrf_api[{labels}-{compat}-{ours}]",
            f"test_pydensecrf_api[{labels}-{compat}-pydensecrf]",
        )
        for labels, compat in ((3, "potts"), (21, "potts"), (21, "matrix"))
        for ours in ("compat", "dense_crf")
    ],
    (
        "rloss's bilateralfilter_batch via rrm_ops.compat, N = 4, K = 21, 161², vs a call per class",
        "test_bilateralfilter_batch[one_call]",
        "test_bilateralfilter_batch[per_class_loop]",
    ),
    (
        "reliable region mining, 4 × 321², 20 classes (1–3 present), vs numpy + pydensecrf per image",
        "test_mining_batch_of_4[rrm_ops]",
        "test_mining_batch_of_4[numpy_pydensecrf_per_image]",
    ),
]


# (label, ours, baseline) of the dense CRF rows whose per-run ratios are listed.
CRF_RUNS = [
    (
        f"{'one image' if batch == 1 else '4 images'}, L = {labels}{', Gaussian rebuilt' if cold else ''}",
        *crf_benchmarks(batch, labels, cold),
    )
    for batch, labels, cold in CRF_CASES
]


def load_run(path: Path) -> dict:
    return json.loads(path.read_text())


def minimum_times(run: dict) -> dict[str, float]:
    """Benchmark name -> minimum over rounds, in seconds."""
    return {bench["name"]: bench["stats"]["min"] for bench in run["benchmarks"]}


def duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.3g} ms"


def span(values: list[float], show) -> str:
    """'low–high' of the values as `show` writes them, the unit once when both share it."""
    low, high = show(min(values)), show(max(values))
    if low == high:
        return low
    low_number, _, low_unit = low.partition(" ")
    high_number, _, high_unit = high.partition(" ")
    return f"{low_number}–{high_number} {low_unit}" if low_unit and low_unit == high_unit else f"{low}–{high}"


def ratio(value: float) -> str:
    return f"{value:.1f}×"


def machine_line(runs: list[dict]) -> str:
    """Where and when the runs were measured, from the JSON files' machine_info and datetime."""
    info = runs[0].get("machine_info", {})
    cpu = info.get("cpu", {}).get("brand_raw") or info.get("processor") or "unknown CPU"
    dates = sorted({run.get("datetime", "")[:10] for run in runs} - {""})
    when = " to ".join(dict.fromkeys([dates[0], dates[-1]])) if dates else "unknown date"
    return (
        f"Measured on {when}: {len(runs)} run{'s' if len(runs) != 1 else ''} on {cpu} "
        f"({info.get('cpu_count', '?')} cores), Python {info.get('python_version', '?')}, "
        f"torch {info.get('torch_version', '?')}, {info.get('torch_threads', '?')} threads."
    )


def tables(runs: list[dict[str, float]]) -> str:
    lines = [
        "| lattice build + filter, C = 21 (min) | 161² | 321² | 642² | 642² / 161² |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, test in LATTICE_ROWS.items():
        cells = [span([run[f"{test}[{size}]"] for run in runs], duration) for size in LATTICE_SIZES]
        growth = span([run[f"{test}[642]"] / run[f"{test}[161]"] for run in runs], ratio)
        lines.append(f"| {label} | {' | '.join(cells)} | {growth} |")
    lines += ["", "| comparison | ours | baseline | ratio |", "| --- | --- | --- | --- |"]
    for label, ours, baseline in COMPARISONS:
        if not all(ours in run and baseline in run for run in runs):
            continue
        lines.append(
            f"| {label} | {span([run[ours] for run in runs], duration)} | "
            f"{span([run[baseline] for run in runs], duration)} | "
            f"{span([run[baseline] / run[ours] for run in runs], ratio)} |"
        )
    lines += [
        "",
        "| dense CRF vs pydensecrf, 321², 10 it. | per-run ratios | median |",
        "| --- | --- | --- |",
    ]
    for label, ours, baseline in CRF_RUNS:
        if not all(ours in run and baseline in run for run in runs):
            continue
        ratios = [run[baseline] / run[ours] for run in runs]
        lines.append(f"| {label} | {', '.join(f'{r:.2f}' for r in ratios)} | {statistics.median(ratios):.2f}× |")
    return "\n".join(lines)


def report(runs: list[dict]) -> str:
    return machine_line(runs) + "\n\n" + tables([minimum_times(run) for run in runs])


def replace_block(text: str, block: str) -> str:
    """text with the lines between BEGIN_MARKER and END_MARKER replaced by block."""
    begin, end = text.find(BEGIN_MARKER), text.find(END_MARKER)
    if begin < 0 or end < begin:
        raise ValueError(f"the file needs the lines {BEGIN_MARKER!r} and, after it, {END_MARKER!r}")
    return text[: begin + len(BEGIN_MARKER)] + "\n" + block + "\n" + text[end:]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="pytest-benchmark --benchmark-json files")
    parser.add_argument("--write", type=Path, help="replace the marked block of this file (docs/benchmarks.md)")
    args = parser.parse_args(argv)
    block = report([load_run(path) for path in args.runs])
    if args.write is None:
        print(block)
    else:
        args.write.write_text(replace_block(args.write.read_text(), block))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
