"""Exact equivariance of every group layer and invariance of every group model: rotate or mirror the input
and the feature maps transform as the group says (to float rounding)."""
import pytest
import torch

from cnnlab.cli import main
from cnnlab.models import create_model
from cnnlab.models.equivariant import (Group, GroupBatchNorm, GroupConv, GroupPool, LiftingConv,
                                       equivariance_warnings, nearest_good_sizes)


def _close(a, b, tol=1e-5):
    return ((a - b).norm() / b.norm().clamp(min=1e-12)).item() < tol


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_group_axioms(group):
    g = Group(group)
    n = g.order
    for a in range(n):
        assert g.compose[a][g.inverse[a]] == 0 and g.compose[g.inverse[a]][a] == 0
        for b in range(n):
            for c in range(n):
                assert g.compose[g.compose[a][b]][c] == g.compose[a][g.compose[b][c]]
    x = torch.randn(1, 1, 5, 5)
    for a in range(n):  # the spatial action is a homomorphism: transform(transform(x, b), a) = ab . x
        for b in range(n):
            assert torch.equal(g.transform(g.transform(x, b), a), g.transform(x, g.compose[a][b]))


@pytest.mark.parametrize("group", ["p4", "p4m"])
@pytest.mark.parametrize("stride, size", [(1, 8), (1, 9), (2, 9)])
def test_every_layer_is_equivariant(group, stride, size):
    torch.manual_seed(0)
    g = Group(group)
    lift, conv = LiftingConv(3, 4, 3, group, stride), GroupConv(4, 5, 3, group, stride)
    bn, pool = GroupBatchNorm(4, group), GroupPool(group)
    x, f = torch.randn(2, 3, size, size), torch.randn(2, 4 * g.order, size, size)
    for e in range(g.order):
        assert _close(lift(g.transform(x, e)), g.act_on_feature_map(lift(x), e))
        assert _close(conv(g.act_on_feature_map(f, e)), g.act_on_feature_map(conv(f), e))
        assert _close(bn(g.act_on_feature_map(f, e)), g.act_on_feature_map(bn(f), e))
        assert _close(pool(g.act_on_feature_map(f, e)), g.transform(pool(f), e))  # invariant features


@pytest.mark.parametrize("name, size, channels, invariant_to", [
    ("p4cnn", 32, 1, range(4)), ("p4mcnn", 32, 1, range(8)), ("p4m_resnet20", 33, 3, range(8)),
    ("p4m_resnet44", 17, 3, range(8)), ("p4m_resnet56", 17, 3, range(8))])
def test_group_models_are_invariant_in_eval_mode(name, size, channels, invariant_to):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=channels).eval()
    g, x = Group("p4m"), torch.randn(3, channels, size, size)
    with torch.no_grad():
        base = model(x)
        for e in range(8):
            change = ((model(g.transform(x, e)) - base).norm() / base.norm()).item()
            assert (change < 1e-5) == (e in invariant_to), (name, e, change)


@pytest.mark.parametrize("group, downsample, size, invariant_to", [
    ("p4", "pool", 16, range(4)), ("p4m", "stride", 17, range(8)), ("p4m", "pool", 16, range(8)),
    ("none", "pool", 16, [0])])
def test_the_builders_group_switch_makes_any_searched_cnn_invariant(group, downsample, size, invariant_to):
    torch.manual_seed(0)
    arch = {"stages": [{"blocks": 1, "width": 16, "kernel": 5}, {"blocks": 2, "width": 32, "kernel": 3}],
            "downsample": downsample, "skip": True, "head": {"type": "fc", "widths": [32]}}
    plain = create_model("cnn", num_classes=10, in_channels=1, arch=arch)
    model = create_model("cnn", num_classes=10, in_channels=1, arch={**arch, "group": group}).eval()
    n_params = sum(p.numel() for p in model.features.parameters())
    assert 0.8 < n_params / sum(p.numel() for p in plain.features.parameters()) < 1.2  # widths / sqrt(|G|)
    g, x = Group("p4m"), torch.randn(3, 1, size, size)
    with torch.no_grad():
        base = model(x)
        for e in range(8):
            change = ((model(g.transform(x, e)) - base).norm() / base.norm()).item()
            assert (change < 1e-5) == (e in invariant_to), (group, e, change)


def test_plain_cnn_is_not_invariant():
    torch.manual_seed(0)
    model, g = create_model("resnet20", num_classes=10).eval(), Group("p4")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert ((model(g.transform(x, 1)) - model(x)).norm() / model(x).norm()).item() > 1e-3


def test_sizes_that_break_equivariance_are_named_with_the_nearest_good_ones(capsys):
    model = create_model("p4m_resnet20", num_classes=10)
    problems = equivariance_warnings(model, 32, 3)
    assert problems[0] == "layer2.0.conv1 gets 32x32 inputs, needs odd sizes"
    assert nearest_good_sizes(model, 32, 3) == [33, 29] and equivariance_warnings(model, 33, 3) == []
    assert equivariance_warnings(create_model("p4cnn", in_channels=1), 31, 1) == [
        "features.6 gets 31x31 inputs, needs even sizes"]
    assert main(["summary", "p4m_resnet20", "--input", "3x32x32"]) == 0
    err = capsys.readouterr().err
    assert "not exactly equivariant at 32x32: layer2.0.conv1" in err and "nearest good sizes: 33 or 29" in err


def test_group_layers_count_their_macs():
    from cnnlab.models.summary import summarize

    s = summarize(create_model("p4cnn", num_classes=10, in_channels=1), (1, 32, 32))
    lift = next(r for r in s.layers if r.type == "LiftingConv")
    assert lift.macs == 10 * 4 * 32 * 32 * 1 * 9 and lift.params == 10 * 9
    conv = next(r for r in s.layers if r.type == "GroupConv")
    assert conv.macs == 10 * 4 * 32 * 32 * 10 * 4 * 9 and conv.params == 10 * 10 * 4 * 9


def test_invariance_command_measures_exact_invariance_of_a_trained_p4m_net(tmp_path, capsys):
    import json

    for model, out in (("p4mcnn", "p4m"), ("resnet20", "plain")):
        assert main(["train", "--model", model, "--model-kwargs", "width=0.5", "--epochs", "1", "--image-size", "16",
                     "--out", str(tmp_path / out), "-q"]) == 0
    capsys.readouterr()
    assert main(["invariance", "--checkpoint", str(tmp_path / "p4m"), "--data", "digits", "--json"]) == 0
    p4m = json.loads(capsys.readouterr().out)
    assert set(p4m) == {"rot90", "rot180", "hflip", "rot15", "translate2"}
    for t in ("rot90", "rot180", "hflip"):
        assert p4m[t]["logit_change"] <= 1e-5 and p4m[t]["prediction_change"] == 0
    assert p4m["rot15"]["logit_change"] > 1e-3  # 15 degrees is not in the group
    assert main(["invariance", "--checkpoint", str(tmp_path / "plain"), "--data", "digits", "--json",
                 "--transforms", "rot90,hflip"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert min(plain[t]["logit_change"] for t in plain) > 1e-2
    assert main(["invariance", "--checkpoint", str(tmp_path / "p4m"), "--data", "digits",
                 "--transforms", "rot90,twirl"]) == 2
    assert "unknown transform 'twirl'" in capsys.readouterr().err


@pytest.mark.parametrize("group", ["p4", "p4m"])
def test_group_conv_init_keeps_the_signal_scale_of_a_plain_conv(group):
    """Without batch norm, a deep group net at initialisation must neither blow up nor die (the plain net's
    Kaiming fan-out init, counted over the filter bank the layer applies)."""
    torch.manual_seed(0)
    arch = {"stages": [{"blocks": 3, "width": 32, "kernel": 3}] * 2, "skip": False, "bn": False, "group": group}
    model = create_model("cnn", num_classes=10, in_channels=1, arch=arch)
    h, scales = torch.randn(64, 1, 16, 16), []
    with torch.no_grad():
        for layer in model.features:
            h = layer(h)
            scales.append(h.pow(2).mean().sqrt().item())
    assert 0.3 < scales[-1] / scales[0] < 3, scales  # measured 0.65 (p4), 0.41 (p4m); the old init: 10x+
