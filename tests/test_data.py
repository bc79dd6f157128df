"""The VOC reader, its errors, the training transforms and the dataset check CLI, on tiny
VOC-layout folders written by the tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from rrm.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetError,
    EvalTransform,
    TrainTransform,
    VOCSegmentation,
    labels_from_mask,
    load_cls_labels,
    read_mask,
    save_cls_labels,
    voc_palette,
    write_mask,
)
from rrm.data.check import main as check_main

# name -> (height, width, mask folder or None, classes drawn in the mask)
IMAGES = {
    "2007_000001": (40, 56, "SegmentationClass", (1, 15)),
    "2007_000002": (48, 32, "SegmentationClass", (7,)),
    "2008_000003": (36, 44, "SegmentationClassAug", (12, 20)),
    "2008_000004": (30, 30, None, ()),
}


def _mask_for(height: int, width: int, classes: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    for position, class_index in enumerate(classes):
        top = 4 + 12 * position
        mask[top:top + 10, 4:20] = class_index
        mask[top - 1, 4:20] = 255  # a boundary line, as VOC draws them
    return mask


def make_voc(root: Path) -> dict[str, np.ndarray]:
    """Write a tiny VOC2012-like folder; return the masks written (by image name)."""
    rng = np.random.default_rng(0)
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    masks = {}
    labels = {}
    for name, (height, width, folder, classes) in IMAGES.items():
        image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg")
        mask = _mask_for(height, width, classes)
        if folder == "SegmentationClass":
            write_mask(root / folder / f"{name}.png", mask)  # palette PNG
        elif folder == "SegmentationClassAug":
            Image.fromarray(mask, mode="L").save(root / folder / f"{name}.png")  # index PNG
        if folder is not None:
            masks[name] = mask
        vector = np.zeros(20, dtype=np.float32)
        vector[[c - 1 for c in classes]] = 1
        labels[name] = vector
    lists = root / "ImageSets/Segmentation"
    (lists / "train.txt").write_text("2007_000001\n2007_000002\n")
    (lists / "val.txt").write_text("2008_000003\n")
    # train_aug lists of some repositories give paths, not bare names.
    (lists / "train_aug.txt").write_text(
        "".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in IMAGES)
    )
    save_cls_labels(root / "cls_labels.npy", labels)
    return masks


@pytest.fixture()
def voc(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "VOC2012"
    return root, make_voc(root)


def test_reads_both_mask_folders_and_formats(voc):
    root, masks = voc
    dataset = VOCSegmentation(root, "train_aug")
    assert dataset.names == list(IMAGES)
    assert [p.parent.name if p else None for p in dataset.mask_paths] == [
        "SegmentationClass", "SegmentationClass", "SegmentationClassAug", None,
    ]
    for index, name in enumerate(dataset.names):
        sample = dataset[index]
        height, width = IMAGES[name][:2]
        assert sample["image"].shape == (3, height, width) and sample["image"].dtype == torch.float32
        assert sample["image_uint8"].shape == (3, height, width) and sample["image_uint8"].dtype == torch.uint8
        assert sample["name"] == name
        if name in masks:
            assert sample["has_mask"]
            np.testing.assert_array_equal(sample["mask"].numpy(), masks[name])
        else:
            assert not sample["has_mask"]
            assert (sample["mask"] == 255).all()
    only_aug = VOCSegmentation(root, "val", mask_source="SegmentationClassAug")
    np.testing.assert_array_equal(only_aug.read_mask(0), masks["2008_000003"])
    assert VOCSegmentation(root, "val", mask_source="none").mask_path(0) is None


def test_rgb_mask_in_voc_colours_is_read_as_indices(tmp_path):
    mask = _mask_for(20, 24, (3, 20))
    Image.fromarray(voc_palette()[mask]).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), mask)


def test_labels_from_npy_and_from_masks_agree(voc):
    root, masks = voc
    from_npy = VOCSegmentation(root, "train", label_source="npy")
    from_masks = VOCSegmentation(root, "train", label_source="masks")
    assert from_npy.label_source == "npy" and from_masks.label_source == "masks"
    for index in range(len(from_npy)):
        np.testing.assert_array_equal(from_npy[index]["label"].numpy(), from_masks[index]["label"].numpy())
    expected = np.zeros(20, dtype=np.float32)
    expected[[0, 14]] = 1  # classes 1 (aeroplane) and 15 (person)
    np.testing.assert_array_equal(from_masks.image_labels(0), expected)
    # Without a cls_labels.npy "auto" derives the labels from the masks.
    (root / "cls_labels.npy").unlink()
    assert VOCSegmentation(root, "train").label_source == "masks"


def test_labels_from_mask_ignores_background_and_boundary():
    mask = np.array([[0, 255, 3], [20, 3, 0]], dtype=np.uint8)
    labels = labels_from_mask(mask)
    assert labels.dtype == np.float32 and labels.shape == (20,)
    assert np.flatnonzero(labels).tolist() == [2, 19]


def test_cls_labels_round_trip_and_refuses_foreign_pickles(tmp_path):
    labels = {"a": np.eye(20, dtype=np.float32)[3], "b": np.zeros(20, dtype=np.float32)}
    save_cls_labels(tmp_path / "ok.npy", labels)
    loaded = load_cls_labels(tmp_path / "ok.npy")
    assert loaded.keys() == labels.keys()
    np.testing.assert_array_equal(loaded["a"], labels["a"])
    np.save(tmp_path / "evil.npy", {"a": Fraction(1, 2)}, allow_pickle=True)
    with pytest.raises(DatasetError, match="evil.npy"):
        load_cls_labels(tmp_path / "evil.npy")
    np.save(tmp_path / "wrong.npy", {"a": np.zeros(5)}, allow_pickle=True)
    with pytest.raises(DatasetError, match="5 values"):
        load_cls_labels(tmp_path / "wrong.npy")


# --- errors ------------------------------------------------------------------------------


def test_missing_root_and_folders(voc, tmp_path):
    root, _ = voc
    with pytest.raises(DatasetError, match="nowhere"):
        VOCSegmentation(tmp_path / "nowhere", "train")
    (root / "SegmentationClassAug" / "2008_000003.png").unlink()
    (root / "SegmentationClassAug").rmdir()
    with pytest.raises(DatasetError, match="SegmentationClassAug"):
        VOCSegmentation(root, "val", mask_source="SegmentationClassAug")
    with pytest.raises(DatasetError, match="missing_split.txt"):
        VOCSegmentation(root, "missing_split")
    (root / "JPEGImages").rename(root / "images")
    with pytest.raises(DatasetError, match="JPEGImages"):
        VOCSegmentation(root, "train")


def test_list_naming_a_missing_image(voc):
    root, _ = voc
    (root / "ImageSets/Segmentation/train.txt").write_text("2007_000001\n2099_999999\n")
    with pytest.raises(DatasetError) as error:
        VOCSegmentation(root, "train")
    assert "2099_999999" in str(error.value)
    assert str(root / "JPEGImages" / "2099_999999.jpg") in str(error.value)


def test_unreadable_files_name_their_path(voc):
    root, _ = voc
    (root / "JPEGImages" / "2007_000002.jpg").write_bytes(b"not a jpeg")
    (root / "SegmentationClass" / "2007_000001.png").write_bytes(b"\x89PNG broken")
    dataset = VOCSegmentation(root, "train")
    with pytest.raises(DatasetError, match="2007_000002.jpg"):
        dataset[1]
    with pytest.raises(DatasetError, match="2007_000001.png"):
        dataset[0]


def test_mask_with_invalid_values_or_wrong_size(voc):
    root, _ = voc
    Image.fromarray(np.full((40, 56), 77, dtype=np.uint8), mode="L").save(root / "SegmentationClass/2007_000001.png")
    with pytest.raises(DatasetError, match=r"2007_000001.png holds values \[77\]"):
        VOCSegmentation(root, "train")[0]
    write_mask(root / "SegmentationClass/2007_000001.png", np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(DatasetError, match="10x10"):
        VOCSegmentation(root, "train")[0]


def test_label_source_problems(voc):
    root, _ = voc
    with pytest.raises(DatasetError, match="no mask for '2008_000004'"):
        VOCSegmentation(root, "train_aug", label_source="masks")
    with pytest.raises(DatasetError, match="no mask for '2008_000004'"):
        VOCSegmentation(root, "train_aug", require_masks=True)
    save_cls_labels(root / "cls_labels.npy", {"2007_000001": np.zeros(20)})
    with pytest.raises(DatasetError, match="'2007_000002'"):
        VOCSegmentation(root, "train")
    with pytest.raises(DatasetError, match="other.npy"):
        VOCSegmentation(root, "train", label_source="npy", cls_labels_path=root / "other.npy")


# --- transforms --------------------------------------------------------------------------


def test_train_transform_crop_roi_and_padding():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    mask = rng.integers(0, 21, size=(20, 30), dtype=np.uint8)
    transform = TrainTransform(crop_size=40, scale_range=(1.0, 1.0), flip_prob=0.0)
    out = transform(image, mask, np.random.default_rng(1))
    roi = out["roi"]
    assert out["image"].shape == (3, 40, 40) and out["image"].dtype == np.float32
    assert out["image_uint8"].shape == (3, 40, 40) and out["image_uint8"].dtype == np.uint8
    assert roi.shape == (40, 40) and roi.dtype == np.float32 and roi.sum() == 20 * 30
    rows, cols = np.nonzero(roi)
    top, left = rows.min(), cols.min()
    assert rows.max() - top == 19 and cols.max() - left == 29  # one rectangle
    inside = (slice(top, top + 20), slice(left, left + 30))
    np.testing.assert_array_equal(out["image_uint8"].transpose(1, 2, 0)[inside], image)
    np.testing.assert_array_equal(out["mask"][inside], mask)
    assert (out["mask"][roi == 0] == 255).all()
    assert (out["image"][:, roi == 0] == 0).all()  # zero padding of the normalised image
    padding_colour = out["image_uint8"][:, roi == 0]
    np.testing.assert_array_equal(padding_colour.T[0], np.round(np.array(IMAGENET_MEAN) * 255))
    expected = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out["image"].transpose(1, 2, 0)[inside], expected, atol=1e-5)


def test_train_transform_rescale_flip_and_large_images():
    image = np.zeros((100, 80, 3), dtype=np.uint8)
    image[:, :40] = 255  # left half white
    mask = np.zeros((100, 80), dtype=np.uint8)
    mask[:, :40] = 5
    flipped = TrainTransform(crop_size=200, scale_range=(0.5, 0.5), flip_prob=1.0)(image, mask, np.random.default_rng(0))
    assert flipped["roi"].sum() == 50 * 40  # rescaled to 40x50
    rows, cols = np.nonzero(flipped["roi"])
    region = flipped["mask"][rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert (region[:, 20:] == 5).all() and (region[:, :20] == 0).all()  # the white half moved right
    cropped = TrainTransform(crop_size=32)(image, mask, np.random.default_rng(0))
    assert cropped["roi"].all()  # an image larger than the crop leaves no padding


def test_samples_are_deterministic_per_seed_epoch_and_index(voc):
    root, _ = voc
    dataset = VOCSegmentation(root, "train", transform=TrainTransform(crop_size=48), seed=3)
    first = dataset[0]
    again = VOCSegmentation(root, "train", transform=TrainTransform(crop_size=48), seed=3)[0]
    for key in ("image", "image_uint8", "roi", "mask"):
        assert torch.equal(first[key], again[key])
    outcomes = set()
    for epoch in range(6):
        dataset.set_epoch(epoch)
        outcomes.add(dataset[0]["roi"].numpy().tobytes())
    assert len(outcomes) > 1


def test_train_batches_collate(voc):
    root, _ = voc
    dataset = VOCSegmentation(root, "train_aug", transform=TrainTransform(crop_size=48))
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 3, 48, 48)
    assert batch["image_uint8"].shape == (4, 3, 48, 48)
    assert batch["roi"].shape == (4, 48, 48)
    assert batch["mask"].shape == (4, 48, 48) and batch["mask"].dtype == torch.int64
    assert batch["label"].shape == (4, 20)
    assert batch["has_mask"].tolist() == [True, True, True, False]
    assert batch["name"] == list(IMAGES)


def test_eval_transform_keeps_the_full_image():
    image = np.full((7, 9, 3), 200, dtype=np.uint8)
    out = EvalTransform()(image, None, np.random.default_rng(0))
    assert out["image"].shape == (3, 7, 9) and out["roi"].all() and (out["mask"] == 255).all()


# --- check CLI ---------------------------------------------------------------------------


def test_check_cli_reports_counts(voc, capsys):
    root, _ = voc
    assert check_main([str(root), "--deep"]) == 0
    report = capsys.readouterr().out
    assert "train: 2 images; masks: 2 in SegmentationClass, 0 in SegmentationClassAug; labels from npy" in report
    assert "train_aug: 4 images; masks: 2 in SegmentationClass, 1 in SegmentationClassAug" in report
    assert "val: 1 images" in report and "dog 1" in report and "tvmonitor 1" in report


def test_check_cli_fails_with_the_path(voc, capsys):
    root, _ = voc
    (root / "JPEGImages" / "2007_000002.jpg").write_bytes(b"garbage")
    assert check_main([str(root), "--deep"]) == 2
    assert "2007_000002.jpg" in capsys.readouterr().err
    assert check_main([str(root / "missing")]) == 2
    assert str(root / "missing") in capsys.readouterr().err
