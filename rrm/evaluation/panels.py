"""PNG panels for eyeballing a run: image | CAM | reliable labels | prediction | ground truth
(step 2: image | prediction | ground truth)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from rrm.data import IGNORE_INDEX, voc_palette

COLUMNS = ("image", "CAM", "reliable", "prediction", "ground truth")
SEGMENTATION_COLUMNS = ("image", "prediction", "ground truth")


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


def draw_panel(rows: Sequence[Sequence[np.ndarray]], path: str | Path, columns: Sequence[str] = COLUMNS) -> None:
    """Write one row per image; each row holds one RGB uint8 [H, W, 3] tile per title of
    ``columns`` (default: the five of a one-step validation)."""
    tile_h = max(tile.shape[0] for row in rows for tile in row)
    tile_w = max(tile.shape[1] for row in rows for tile in row)
    header, gap = 14, 2
    canvas = Image.new("RGB", (len(columns) * (tile_w + gap), header + len(rows) * (tile_h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(columns):
        draw.text((column * (tile_w + gap) + 2, 1), title, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for column, tile in enumerate(row):
            canvas.paste(Image.fromarray(tile), (column * (tile_w + gap), header + r * (tile_h + gap)))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
