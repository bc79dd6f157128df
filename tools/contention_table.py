"""Markdown table of a benchmarks/test_bench_contention.py run.

    python tools/contention_table.py run.json

Each cell is the median over the rounds of one case at one number of competing busy processes,
with its slowdown against the same case with none in parentheses.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def medians(run: dict) -> dict[str, dict[int, float]]:
    """case -> competing processes -> median seconds."""
    table: dict[str, dict[int, float]] = {}
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        table.setdefault(info["case"], {})[info["competing"]] = statistics.median(bench["stats"]["data"])
    return table


def cell(seconds: float, quiet: float | None) -> str:
    text = f"{seconds * 1e3:.3g} ms" if seconds < 1 else f"{seconds * 1e3:,.0f} ms"
    return text if quiet is None else f"{text} ({seconds / quiet:.1f}×)"


def markdown(run: dict) -> str:
    table = medians(run)
    levels = sorted({level for row in table.values() for level in row})
    lines = [
        "| case | " + " | ".join(f"{level} competing" for level in levels) + " |",
        "| --- |" + " --- |" * len(levels),
    ]
    for case, row in table.items():
        quiet = row.get(0)
        cells = [cell(row[level], None if level == 0 else quiet) if level in row else "" for level in levels]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    info = run["machine_info"]
    lines.append("")
    lines.append(
        f"Run of {run['datetime'][:16].replace('T', ' ')} UTC on {info.get('cpu', {}).get('brand_raw', '?')} "
        f"({info.get('cpu_count', '?')} cores), torch {info.get('torch_version', '?')}."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the --benchmark-json file of one run")
    print(markdown(json.loads(parser.parse_args().run.read_text())))


if __name__ == "__main__":
    main()
