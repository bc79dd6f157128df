"""The embedded synthetic dataset: determinism, masks that match their images, the VOC
layout the reader reads, the cache and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rrm.data import DatasetError, VOCSegmentation, load_cls_labels, read_image, read_mask
from rrm.data.synthetic import main
from rrm.data.synthetic_dataset import SYNTHETIC_VERSION, ensure_synthetic_dataset, generate_synthetic_dataset
from rrm.data.synthetic_scenes import PALETTE, SYNTHETIC_CLASSES, render_scene

SMALL = dict(n_train=6, n_val=3, size=64)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic_per_seed(tmp_path):
    first = _files(generate_synthetic_dataset(tmp_path / "a", seed=5, **SMALL))
    second = _files(generate_synthetic_dataset(tmp_path / "b", seed=5, **SMALL))
    other = _files(generate_synthetic_dataset(tmp_path / "c", seed=6, **SMALL))
    assert first == second
    assert first.keys() == other.keys()
    assert first["JPEGImages/train_00000.jpg"] != other["JPEGImages/train_00000.jpg"]
    # A larger dataset extends a smaller one: image i depends only on (seed, split, i).
    larger = generate_synthetic_dataset(tmp_path / "d", seed=5, n_train=8, n_val=3, size=64)
    assert (larger / "JPEGImages/train_00005.jpg").read_bytes() == first["JPEGImages/train_00005.jpg"]


def test_layout_is_read_by_the_voc_reader(tmp_path):
    root = generate_synthetic_dataset(tmp_path / "syn", **SMALL)
    for split, count in (("train", 6), ("train_aug", 6), ("val", 3)):
        from_npy = VOCSegmentation(root, split, require_masks=True)
        from_masks = VOCSegmentation(root, split, label_source="masks")
        assert len(from_npy) == count and from_npy.label_source == "npy"
        for index in range(count):
            np.testing.assert_array_equal(from_npy.image_labels(index), from_masks.image_labels(index))
            sample = from_npy[index]
            assert sample["has_mask"] and max(sample["image"].shape[1:]) == 64
    metadata = json.loads((root / "synthetic.json").read_text())
    assert metadata["seed"] == 0 and metadata["n_train"] == 6 and len(metadata["classes"]) == len(SYNTHETIC_CLASSES)


def test_written_files_are_the_rendered_scene(tmp_path):
    root = generate_synthetic_dataset(tmp_path / "syn", seed=2, **SMALL)
    scene = render_scene(np.random.default_rng([2, 1, 1]), 64)  # val image 1
    np.testing.assert_array_equal(read_mask(root / "SegmentationClass/val_00001.png"), scene.mask)
    decoded = read_image(root / "JPEGImages/val_00001.jpg").astype(np.float64)
    assert decoded.shape == scene.image.shape
    error = np.abs(decoded - scene.image).mean()  # JPEG (quality 90, 4:2:0) of a noisy image
    misaligned = np.abs(decoded - np.roll(scene.image, 2, axis=1)).mean()
    assert error < 8.0 and error < 0.7 * misaligned
    np.testing.assert_array_equal(load_cls_labels(root / "cls_labels.npy")["val_00001"], scene.labels)


def _distance_to_colour_plane(pixels: np.ndarray, colours: np.ndarray) -> float:
    """Median distance of RGB pixels ``[N, 3]`` to the plane spanned by an object's two
    colours (shading scales them and the pattern mixes them, so the object's own pixels lie
    close to that plane)."""
    basis, _ = np.linalg.qr(colours.T)  # [3, 2]
    residual = pixels - (pixels @ basis) @ basis.T
    return float(np.median(np.linalg.norm(residual, axis=1)))


def test_masks_match_images():
    """Inside each object (away from its edge) the pixels wear that object's colours; the
    same pixels half an image away do not, so mask and image are aligned."""
    checked = 0
    for index in range(12):
        scene = render_scene(np.random.default_rng([0, 0, index]), 96)
        image = scene.image.astype(np.float64)
        for obj in scene.objects:
            if sum(o.class_index == obj.class_index for o in scene.objects) > 1:
                continue  # two objects of one class share a mask value
            region = scene.mask == obj.class_index
            interior = region.copy()
            for axis in (0, 1):  # erode by 2 pixels
                for shift in (-2, -1, 1, 2):
                    interior &= np.roll(region, shift, axis=axis)
            shifted = np.roll(interior, (image.shape[0] // 2, image.shape[1] // 2), axis=(0, 1)) & ~region
            if interior.sum() < 30 or shifted.sum() < 30:
                continue
            colours = np.array(obj.colours)
            inside = _distance_to_colour_plane(image[interior], colours)
            assert inside < 12.0, (index, obj)
            assert inside < _distance_to_colour_plane(image[shifted], colours), (index, obj)
            checked += 1
    assert checked >= 5


def test_scene_statistics():
    seen_classes: set[int] = set()
    object_counts = set()
    for index in range(60):
        scene = render_scene(np.random.default_rng([1, 0, index]), 64)
        values = set(np.unique(scene.mask).tolist())
        assert values <= {0, 255} | set(SYNTHETIC_CLASSES)
        assert 255 in values  # the boundary band
        present = {c for c in values if c not in (0, 255)}
        assert present == {o.class_index for o in scene.objects}
        assert np.flatnonzero(scene.labels).tolist() == sorted(c - 1 for c in present)
        assert all(o.visible_pixels >= 80 for o in scene.objects)
        seen_classes |= present
        object_counts.add(len(scene.objects))
        assert max(scene.image.shape[:2]) == 64 and min(scene.image.shape[:2]) >= 48
    assert len(seen_classes) >= 5 and object_counts == {1, 2, 3}


def test_shared_palette_does_not_identify_the_class():
    colours_by_class: dict[int, set[int]] = {}
    for index in range(80):
        for obj in render_scene(np.random.default_rng([3, 0, index]), 48).objects:
            # Palette entry nearest to the drawn colour (colours are jittered by +-20).
            entry = int(np.argmin(np.linalg.norm(PALETTE - np.array(obj.colours[0]), axis=1)))
            colours_by_class.setdefault(obj.class_index, set()).add(entry)
    assert all(len(entries) >= 6 for entries in colours_by_class.values())


def test_ensure_caches_in_rrm_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RRM_CACHE", str(tmp_path / "cache"))
    root = ensure_synthetic_dataset(**SMALL)
    assert root == tmp_path / "cache" / f"synthetic-v{SYNTHETIC_VERSION}-train6-val3-size64-seed0"
    stamp = (root / "cls_labels.npy").stat().st_mtime_ns
    assert ensure_synthetic_dataset(**SMALL) == root
    assert (root / "cls_labels.npy").stat().st_mtime_ns == stamp
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no staging left
    explicit = ensure_synthetic_dataset(tmp_path / "elsewhere", **SMALL)
    assert explicit.parent == tmp_path / "elsewhere"
    (explicit / "synthetic.json").write_text("{}")
    with pytest.raises(DatasetError, match="other parameters"):
        ensure_synthetic_dataset(tmp_path / "elsewhere", **SMALL)


def test_cli(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--out", str(out), "--n-train", "4", "--n-val", "2", "--size", "48", "--seed", "1"]) == 0
    assert "wrote 4 train + 2 val images" in capsys.readouterr().out
    assert len(list((out / "JPEGImages").iterdir())) == 6
    assert main(["--out", str(out), "--n-train", "4", "--n-val", "2", "--size", "48"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["--out", str(out), "--n-train", "2", "--n-val", "2", "--size", "48", "--overwrite"]) == 0
    assert len(list((out / "JPEGImages").iterdir())) == 4
