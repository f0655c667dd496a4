"""The switches every family takes (bn, kernel_size, width, activation, residual) and their errors."""
import pytest
import torch
import torch.nn as nn

import cnnlab
from cnnlab import CnnlabError

FAMILIES = ["alexnet", "vgg11", "resnet18", "resnet50", "resnet20"]


def count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


def on_meta(name, **kw):
    with torch.device("meta"):  # structure only: no memory, no initialisation
        return cnnlab.create_model(name, **kw)


@pytest.mark.parametrize("name", FAMILIES)
def test_bn_switch(name):
    on, off = on_meta(name, bn=True), on_meta(name, bn=False)
    assert count(on, nn.BatchNorm2d) > 0 and count(off, nn.BatchNorm2d) == 0


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("act,kind", [("gelu", nn.GELU), ("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh)])
def test_activation_switch(name, act, kind):
    model = on_meta(name, activation=act)
    assert count(model, kind) > 0 and count(model, nn.ReLU) == 0


@pytest.mark.parametrize("k", [3, 5, 7, 11])
def test_kernel_size_switch_scales_conv_params(k):
    model = cnnlab.create_model("resnet20", kernel_size=k)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (k, k) for c in convs)
    out = model.eval()(torch.zeros(1, 3, 32, 32))  # 'same' padding: the shapes still fit
    assert out.shape == (1, 10)
    # conv weights grow as k^2: 267,696 of resnet20's weights are 3x3 conv weights
    conv_weights = sum(c.weight.numel() for c in convs)
    assert conv_weights == 267_696 * k * k // 9


def test_small_filters_vs_large_receptive_field():
    """Two stacked 3x3 convs see as far as one 5x5 with fewer weights: the VGG argument, measured."""
    from cnnlab.models.summary import summarize

    small = summarize(cnnlab.create_model("vgg11", kernel_size=3, num_classes=10), (3, 32, 32))
    large = summarize(cnnlab.create_model("vgg11", kernel_size=5, num_classes=10), (3, 32, 32))
    assert large.receptive_field > small.receptive_field and large.params > small.params


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "vgg11"])
def test_width_multiplier(name):
    half = cnnlab.create_model(name, width=0.5, num_classes=10)
    full = cnnlab.create_model(name, num_classes=10)
    ratio = sum(p.numel() for p in half.parameters()) / sum(p.numel() for p in full.parameters())
    assert 0.2 < ratio < 0.3  # conv weights scale with width squared


def test_residual_switch_on_imagenet_resnet():
    plain = cnnlab.create_model("resnet18", residual=False, num_classes=10)
    assert not any("downsample" in k for k in plain.state_dict())
    assert plain.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


def test_in_channels_and_classes():
    assert cnnlab.create_model("resnet20", in_channels=1, num_classes=7)(torch.zeros(2, 1, 28, 28)).shape == (2, 7)


@pytest.mark.parametrize("name,size", [("alexnet", 63), ("vgg11", 32), ("resnet18", 1), ("resnet20", 1)])
def test_documented_minimum_input_size(name, size):
    model = cnnlab.create_model(name, num_classes=10).eval()
    assert model.min_input_size == size
    assert model(torch.zeros(1, 3, size, size)).shape == (1, 10)
    if size > 1:
        from cnnlab.models.summary import summarize
        with pytest.raises(CnnlabError, match=f"minimum input is {size}x{size}"):
            summarize(model, (3, size - 1, size - 1), name)


@pytest.mark.parametrize("kwargs,message", [
    ({"depth": 3}, "has no switch 'depth'"), ({"bn": "maybe"}, "bn='maybe' must be a bool"),
    ({"kernel_size": 4}, "kernel_size must be an odd"), ({"activation": "swish"}, "unknown activation"),
    ({"width": 0}, "width must be a positive"), ({"num_classes": 0}, "num_classes must be a positive"),
])
def test_bad_switches_raise_one_clear_error(kwargs, message):
    with pytest.raises(CnnlabError, match=message):
        cnnlab.create_model("resnet20", **kwargs)


def test_unknown_model():
    with pytest.raises(CnnlabError, match="unknown model 'resnet19'"):
        cnnlab.create_model("resnet19")


def test_preact_switch_moves_norm_and_activation_before_each_conv():
    torch.manual_seed(0)
    post = cnnlab.create_model("resnet20", num_classes=10)
    pre = cnnlab.create_model("resnet20", num_classes=10, preact=True)
    assert sum(p.numel() for p in pre.parameters()) == sum(p.numel() for p in post.parameters()) == 269_722
    assert pre.bn1.num_features == 64 and pre.layer1[0].bn1.num_features == 16  # final norm; norm before conv1
    block = pre.layer2[1].eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        branch = block.conv2(block.relu(block.bn2(block.conv1(block.relu(block.bn1(x))))))
        assert torch.allclose(block(x), x + branch)  # the skip adds the input untouched: no activation after


@pytest.mark.parametrize("downsample", ["pool", "stride"])
@pytest.mark.parametrize("skip", [True, False])
def test_valid_padding_shrinks_each_conv_and_knows_its_minimum_input(downsample, skip):
    from cnnlab.models.summary import summarize

    arch = {"stages": [{"blocks": 1, "width": 8, "kernel": 5}, {"blocks": 2, "width": 16, "kernel": 3}],
            "downsample": downsample, "skip": skip, "padding": "valid"}
    model = cnnlab.create_model("cnn", num_classes=10, in_channels=1, arch=arch)
    rows = {r.name: r.output for r in summarize(model, (1, 40, 40)).layers}
    assert rows["features.0"][-1] == 36 and rows["features.3.conv1"][-1] == 32  # 5x5: 4 pixels fewer each
    m = model.min_input_size
    same = cnnlab.create_model("cnn", num_classes=10, in_channels=1, arch={**arch, "padding": "same"})
    assert same.min_input_size < m
    summarize(model, (1, m, m))  # the smallest input runs, skip connections center-cropped ...
    with pytest.raises(CnnlabError, match=f"its minimum input is {m}x{m}"):
        summarize(model, (1, m - 1, m - 1))  # ... and one pixel less fails in one line
