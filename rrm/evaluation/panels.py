"""PNG panels for eyeballing a run: image | CAM | reliable labels | prediction | ground truth
(step 2: image | prediction | ground truth), with a caption on the tiles that need one and a
legend strip of the classes shown and their colours."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rrm.data import IGNORE_INDEX, VOC_CLASSES, voc_palette

COLUMNS = ("image", "CAM", "reliable", "prediction", "ground truth")
SEGMENTATION_COLUMNS = ("image", "prediction", "ground truth")
LABEL_NAMES = ("background", *VOC_CLASSES)  # label l of a mask is LABEL_NAMES[l]
UNTRAINED_GREY = 150
_HEADER, _GAP, _LINE, _SWATCH = 14, 2, 12, 9


def colourise(labels: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] of a label map [H, W] with the VOC palette; ignore is white."""
    palette = voc_palette().reshape(-1, 3)
    rgb = palette[np.clip(labels, 0, 255).astype(np.int64)]
    rgb[labels == IGNORE_INDEX] = 255
    return rgb.astype(np.uint8)


def heatmap(values: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] of values [H, W] in [0, 1]: dark blue -> red -> yellow."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    low, mid, high = np.array([20, 20, 120]), np.array([220, 40, 30]), np.array([255, 240, 80])
    rgb = np.where(v < 0.5, low + (mid - low) * (v / 0.5), mid + (high - mid) * ((v - 0.5) / 0.5))
    return rgb.astype(np.uint8)


def blank_tile(height: int, width: int) -> np.ndarray:
    """A grey uint8 [H, W, 3] tile, shown in place of an output that means nothing yet."""
    return np.full((height, width, 3), UNTRAINED_GREY, dtype=np.uint8)


def labels_in(*label_maps: np.ndarray) -> set[int]:
    """The labels (0..20 and 255) that occur in the maps."""
    return {int(label) for labels in label_maps for label in np.unique(labels)}


def draw_panel(rows: Sequence[Sequence[np.ndarray]], path: str | Path, columns: Sequence[str] = COLUMNS,
               captions: Sequence[Sequence[str]] | None = None, legend: Iterable[int] = ()) -> None:
    """Write one row per image; each row holds one RGB uint8 [H, W, 3] tile per title of
    ``columns`` (default: the five of a one-step validation). ``captions[r][c]``, when not
    empty, is written over tile c of row r; ``legend`` lists the labels whose colour and
    name are shown in a strip below the rows (255: ignored or unreliable)."""
    tile_h = max(tile.shape[0] for row in rows for tile in row)
    tile_w = max(tile.shape[1] for row in rows for tile in row)
    width = len(columns) * (tile_w + _GAP)
    entries = [(_label_colour(label), _label_name(label)) for label in sorted(legend)]
    legend_lines = _legend_lines(entries, width)
    height = _HEADER + len(rows) * (tile_h + _GAP) + len(legend_lines) * _LINE + (4 if legend_lines else 0)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(columns):
        draw.text((column * (tile_w + _GAP) + 2, 1), title, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        top = _HEADER + r * (tile_h + _GAP)
        for column, tile in enumerate(row):
            left = column * (tile_w + _GAP)
            canvas.paste(Image.fromarray(tile), (left, top))
            caption = captions[r][column] if captions else ""
            if caption:
                _caption(draw, caption, left, top, tile_w)
    y = _HEADER + len(rows) * (tile_h + _GAP) + 2
    for line in legend_lines:
        x = 2
        for colour, name in line:
            draw.rectangle((x, y + 1, x + _SWATCH, y + 1 + _SWATCH), fill=colour, outline=(0, 0, 0))
            draw.text((x + _SWATCH + 3, y), name, fill=(0, 0, 0))
            x += _entry_width(name)
        y += _LINE
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def _label_colour(label: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in colourise(np.array([[label]]))[0, 0])


def _label_name(label: int) -> str:
    if label == IGNORE_INDEX:
        return "ignored / unreliable"
    return LABEL_NAMES[label] if 0 <= label < len(LABEL_NAMES) else f"label {label}"


def _entry_width(name: str) -> int:
    return _SWATCH + 3 + 6 * len(name) + 10


def _legend_lines(entries: list[tuple[tuple[int, int, int], str]], width: int) -> list[list]:
    lines: list[list] = []
    used = width
    for entry in entries:
        if used + _entry_width(entry[1]) > width:
            lines.append([])
            used = 2
        lines[-1].append(entry)
        used += _entry_width(entry[1])
    return lines


def _caption(draw: ImageDraw.ImageDraw, text: str, left: int, top: int, tile_w: int) -> None:
    """``text`` in white on black over the top of a tile, wrapped to its width."""
    per_line = max(1, (tile_w - 4) // 6)
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= per_line:
            lines[-1] += " " + word
        else:
            lines.extend(word[i:i + per_line] for i in range(0, len(word), per_line))
    for number, line in enumerate(lines):
        y = top + 1 + number * 11
        draw.rectangle((left, y, left + 6 * len(line) + 3, y + 10), fill=(0, 0, 0))
        draw.text((left + 2, y - 1), line, fill=(255, 255, 255))
