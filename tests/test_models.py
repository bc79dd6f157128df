"""Networks: PSA/RRM checkpoint compatibility of ResNet-38, forward shapes, multi-scale CAMs,
frozen BatchNorm, parameter groups, DeepLab-v2 and checkpoint loading."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from rrm.models import build_deeplab, build_rrm, load_state_dict_file


def psa_resnet38_shapes() -> OrderedDict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of PSA's ResNet-38 (``network/resnet38d.py``), written out
    from its definition, independently of rrm.models."""
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def batchnorm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)

    def res_block(name: str, cin: int, cmid: int, cout: int, projection: bool) -> None:
        batchnorm(f"{name}.bn_branch2a", cin)
        shapes[f"{name}.conv_branch2a.weight"] = (cmid, cin, 3, 3)
        batchnorm(f"{name}.bn_branch2b1", cmid)
        shapes[f"{name}.conv_branch2b1.weight"] = (cout, cmid, 3, 3)
        if projection:
            shapes[f"{name}.conv_branch1.weight"] = (cout, cin, 1, 1)

    def bottleneck_block(name: str, cin: int, cout: int) -> None:
        batchnorm(f"{name}.bn_branch2a", cin)
        shapes[f"{name}.conv_branch2a.weight"] = (cout // 4, cin, 1, 1)
        batchnorm(f"{name}.bn_branch2b1", cout // 4)
        shapes[f"{name}.conv_branch2b1.weight"] = (cout // 2, cout // 4, 3, 3)
        batchnorm(f"{name}.bn_branch2b2", cout // 2)
        shapes[f"{name}.conv_branch2b2.weight"] = (cout, cout // 2, 1, 1)
        shapes[f"{name}.conv_branch1.weight"] = (cout, cin, 1, 1)

    shapes["conv1a.weight"] = (64, 3, 3, 3)
    res_block("b2", 64, 128, 128, True)
    res_block("b2_1", 128, 128, 128, False)
    res_block("b2_2", 128, 128, 128, False)
    res_block("b3", 128, 256, 256, True)
    res_block("b3_1", 256, 256, 256, False)
    res_block("b3_2", 256, 256, 256, False)
    res_block("b4", 256, 512, 512, True)
    for index in range(1, 6):
        res_block(f"b4_{index}", 512, 512, 512, False)
    res_block("b5", 512, 512, 1024, True)
    res_block("b5_1", 1024, 512, 1024, False)
    res_block("b5_2", 1024, 512, 1024, False)
    bottleneck_block("b6", 1024, 2048)
    bottleneck_block("b7", 2048, 4096)
    batchnorm("bn7", 4096)
    return shapes


def psa_cls_shapes() -> OrderedDict[str, tuple[int, ...]]:
    """PSA's ``res38_cls.pth``: ResNet-38 + ``fc8``."""
    shapes = psa_resnet38_shapes()
    shapes["fc8.weight"] = (20, 4096, 1, 1)
    return shapes


def rrm_final_shapes() -> OrderedDict[str, tuple[int, ...]]:
    """RRM's ``RRM_final.pth``: PSA's classifier + the segmentation branch."""
    shapes = psa_cls_shapes()
    shapes["fc8_seg_conv1.weight"] = (512, 4096, 3, 3)
    shapes["fc8_seg_conv1.bias"] = (512,)
    shapes["fc8_seg_conv2.weight"] = (21, 512, 3, 3)
    shapes["fc8_seg_conv2.bias"] = (21,)
    return shapes


def make_state_dict(shapes: dict[str, tuple[int, ...]], with_batch_counts: bool) -> dict[str, torch.Tensor]:
    """Random weights (He-scaled, so activations stay finite through 38 layers), identity
    BatchNorm statistics."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
            state[key] = torch.ones(shape)
        elif key.endswith(("running_mean", ".bias")):
            state[key] = torch.zeros(shape)
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
        if with_batch_counts and key.endswith("running_var"):
            state[key.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    return state


@pytest.fixture(scope="module")
def rrm_resnet38():
    return build_rrm("resnet38")


@pytest.fixture(scope="module")
def rrm_final_state():
    return make_state_dict(rrm_final_shapes(), with_batch_counts=True)


def test_resnet38_state_dict_equals_rrm_final(rrm_resnet38):
    own = {k: tuple(v.shape) for k, v in rrm_resnet38.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert own == dict(rrm_final_shapes())
    assert list(own) == list(rrm_final_shapes())  # same order, too


def test_rrm_final_style_checkpoint_loads_strict_and_runs(rrm_resnet38, rrm_final_state):
    rrm_resnet38.load_state_dict(rrm_final_state, strict=True)
    # Checkpoints saved by old PyTorch lack num_batches_tracked; they load strictly too.
    without_counts = {k: v for k, v in rrm_final_state.items() if not k.endswith("num_batches_tracked")}
    rrm_resnet38.load_state_dict(without_counts, strict=True)
    rrm_resnet38.eval()
    with torch.no_grad():
        out = rrm_resnet38(torch.randn(2, 3, 36, 50), cam_scales=(1.0, 0.5))
    assert out["cls_logits"].shape == (2, 20)
    assert out["cams"].shape == (2, 20, 5, 7)  # ceil(36/8), ceil(50/8)
    assert out["seg_logits"].shape == (2, 21, 5, 7)
    assert (out["cams"] >= 0).all() and torch.isfinite(out["seg_logits"]).all()
    assert torch.equal(rrm_resnet38.fc8_seg_conv2.bias, rrm_final_state["fc8_seg_conv2.bias"])


def test_psa_res38_cls_checkpoint_loads_strict():
    classifier = build_rrm("resnet38", seg_head=False)
    assert {k for k in classifier.state_dict() if not k.endswith("num_batches_tracked")} == set(psa_cls_shapes())
    classifier.load_state_dict(make_state_dict(psa_cls_shapes(), with_batch_counts=False), strict=True)
    classifier.eval()
    with torch.no_grad():
        out = classifier(torch.randn(1, 3, 24, 24))
    assert set(out) == {"cls_logits", "cams"} and out["cams"].shape == (1, 20, 3, 3)


def test_load_pretrained_fills_what_it_has_and_rejects_the_rest(rrm_resnet38, rrm_final_state):
    cls_only = {k: v for k, v in rrm_final_state.items() if not k.startswith("fc8_seg")}
    assert rrm_resnet38.load_pretrained(cls_only) == [
        "fc8_seg_conv1.bias", "fc8_seg_conv1.weight", "fc8_seg_conv2.bias", "fc8_seg_conv2.weight",
    ]
    backbone_only = {k: v for k, v in cls_only.items() if not k.startswith("fc8")}
    assert "fc8.weight" in rrm_resnet38.load_pretrained(backbone_only)
    with pytest.raises(ValueError, match="unexpected keys.*linear1000"):
        rrm_resnet38.load_pretrained({**backbone_only, "linear1000.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="missing keys.*b4_3.conv_branch2a.weight"):
        rrm_resnet38.load_pretrained({k: v for k, v in backbone_only.items() if k != "b4_3.conv_branch2a.weight"})
    with pytest.raises(ValueError, match="shape mismatches.*fc8.weight"):
        rrm_resnet38.load_pretrained({**backbone_only, "fc8.weight": torch.zeros(21, 4096, 1, 1)})


def test_batchnorm_stays_frozen_in_train_mode(rrm_resnet38):
    rrm_resnet38.train()
    batchnorms = [m for m in rrm_resnet38.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and not any(m.training for m in batchnorms)
    assert not any(p.requires_grad for m in batchnorms for p in m.parameters())
    assert rrm_resnet38.dropout7.training and rrm_resnet38.b7.dropout_2b1.training
    before = rrm_resnet38.bn7.running_mean.clone()
    rrm_resnet38(torch.randn(1, 3, 16, 16))
    assert torch.equal(before, rrm_resnet38.bn7.running_mean)


def _group_summary(groups):
    return [(g["name"], len(g["params"]), g["lr"], g["weight_decay"]) for g in groups]


def test_param_groups(rrm_resnet38):
    assert _group_summary(rrm_resnet38.param_groups(0.01, 5e-4)) == [
        ("backbone_weights", 43, 0.01, 5e-4),  # the convolutions of ResNet-38; BN is frozen
        ("backbone_biases", 0, 0.02, 0.0),
        ("head_weights", 3, 0.1, 5e-4),
        ("head_biases", 2, 0.2, 0.0),
    ]
    small = build_rrm("small")
    groups = small.param_groups(0.1, 1e-4)
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped})
    assert {id(p) for p in grouped} == {id(p) for p in small.parameters() if p.requires_grad}
    assert [g["lr_mult"] for g in groups] == [1.0, 2.0, 10.0, 20.0]
    assert len(groups[1]["params"]) == 16  # trainable BatchNorm affine parameters of the small net
    torch.optim.SGD(groups, lr=0.1, momentum=0.9)


def test_small_rrm_forward_and_training_step():
    torch.manual_seed(0)
    model = build_rrm("small").train()
    images = torch.randn(2, 3, 64, 80)
    out = model(images, cam_scales=(1.0, 0.5, 1.5, 2.0))
    assert out["cls_logits"].shape == (2, 20)
    assert out["cams"].shape == (2, 20, 8, 10)
    assert out["seg_logits"].shape == (2, 21, 8, 10)
    loss = F.multilabel_soft_margin_loss(out["cls_logits"], torch.ones(2, 20)) + out["seg_logits"].mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_multiscale_cams_average_and_gradient():
    torch.manual_seed(0)
    model = build_rrm("small").eval()
    images = torch.randn(1, 3, 48, 64)
    scales = (1.0, 0.5, 1.5, 2.0)
    expected = torch.zeros(1, 20, 6, 8)
    with torch.no_grad():
        for scale in scales:
            resized = F.interpolate(images, size=(int(48 * scale), int(64 * scale)), mode="bilinear", align_corners=False)
            cams = model.cams_from_features(model.features(resized))
            expected += F.interpolate(cams, size=(6, 8), mode="bilinear", align_corners=False) / len(scales)
    multiscale = model(images, cam_scales=scales)["cams"]
    torch.testing.assert_close(multiscale, expected)

    # Only scale 1 carries gradient: d(sum of the average)/d(fc8) is a quarter of scale 1's.
    multiscale.sum().backward()
    multiscale_grad = model.fc8.weight.grad.clone()
    model.zero_grad()
    (model.cams_from_features(model.features(images)).sum() / len(scales)).backward()
    torch.testing.assert_close(multiscale_grad, model.fc8.weight.grad)
    with pytest.raises(ValueError, match="include 1"):
        model(images, cam_scales=(0.5, 2.0))


def test_extra_cam_scales_leave_batchnorm_running_statistics_alone():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 48, 64) * 3 + 1
    single, multi = build_rrm("small").train(), build_rrm("small").train()
    multi.load_state_dict(single.state_dict())
    out_single = single(images)
    out_multi = multi(images, cam_scales=(1.0, 0.5, 1.5))
    # The training pass itself still normalises with (and records) the batch's statistics.
    torch.testing.assert_close(out_multi["seg_logits"], out_single["seg_logits"], rtol=0, atol=0)
    for key, value in single.state_dict().items():
        assert torch.equal(multi.state_dict()[key], value), key
    assert single.stage1[1].num_batches_tracked.item() == 1
    assert all(layer.track_running_stats for layer in multi.modules() if isinstance(layer, torch.nn.BatchNorm2d))


def test_deeplab_resnet101():
    model = build_deeplab("resnet101").eval()
    backbone_params = sum(p.numel() for p in model.backbone.parameters())
    assert backbone_params == 42_500_160  # torchvision's ResNet-101 without its 1000-way fc
    keys = model.backbone.state_dict().keys()
    assert {"conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer3.22.conv3.weight"} <= keys
    assert [tuple(c.dilation) for c in model.classifier] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 65, 49))
    assert out["seg_logits"].shape == (1, 21, 9, 7)
    assert _group_summary(model.param_groups(1e-3, 5e-4))[2:] == [
        ("head_weights", 4, 1e-2, 5e-4),
        ("head_biases", 4, 2e-2, 0.0),
    ]


def test_small_deeplab_trains():
    model = build_deeplab("small").train()
    out = model(torch.randn(2, 3, 64, 64))["seg_logits"]
    assert out.shape == (2, 21, 8, 8)
    F.cross_entropy(out, torch.randint(0, 21, (2, 8, 8))).backward()
    with pytest.raises(ValueError, match="unknown DeepLab backbone"):
        build_deeplab("vgg16")
    with pytest.raises(ValueError, match="unknown RRM backbone"):
        build_rrm("resnet50")


class _NotWeights:
    pass


def test_load_state_dict_file(tmp_path):
    model = build_rrm("small")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "ddp.pth")
    loaded = load_state_dict_file(tmp_path / "ddp.pth")
    assert loaded.keys() == model.state_dict().keys()
    build_rrm("small").load_state_dict(loaded, strict=True)
    torch.save({"weights": _NotWeights()}, tmp_path / "object.pth")
    with pytest.raises(ValueError, match="object.pth"):
        load_state_dict_file(tmp_path / "object.pth")
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        load_state_dict_file(tmp_path / "absent.pth")
