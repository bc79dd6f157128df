"""``python -m rrm_ops.demo``: its help and its labelled output."""

import subprocess
import sys

import numpy as np
from PIL import Image


def test_demo_help_names_the_command_and_explains_its_options():
    result = subprocess.run([sys.executable, "-m", "rrm_ops.demo", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m rrm_ops.demo")
    assert "spatial width of the filter in pixels" in result.stdout
    assert "colour width of the filter" in result.stdout


def test_demo_writes_original_filtered_and_difference_with_captions(tmp_path):
    from rrm_ops.demo import main

    out = tmp_path / "demo.png"
    assert main(["--out", str(out), "--sigma-xy", "16", "--sigma-rgb", "10"]) == 0
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape == (512 + 18, 3 * 512, 3)
    caption_band = picture[:18]
    assert (caption_band < 100).any() and (caption_band == 255).mean() > 0.8  # dark text on white
    original, filtered = picture[18:, :512].astype(int), picture[18:, 512:1024].astype(int)
    assert np.abs(original - filtered).mean() > 1.0  # the filter visibly changed the photo
