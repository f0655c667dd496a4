"""Per-layer summary checked against hand computation and published receptive fields."""
import json

import pytest
import torch.nn as nn

import cnnlab
from cnnlab.models.summary import parse_input_shape, summarize


def test_hand_computed_stack():
    """conv3 -> conv3 -> pool2 -> conv3: RF 3, 5, 6, 10; MACs = out pixels x cin x k^2 x cout."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        nn.MaxPool2d(2), nn.Conv2d(8, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    s = summarize(net, (3, 16, 16))
    rf = {r.name: r.receptive_field for r in s.layers}
    assert [rf["0"], rf["2"], rf["3"], rf["4"]] == [3, 5, 6, 10] and rf["6"] is None
    macs = {r.name: r.macs for r in s.layers}
    assert macs["0"] == 16 * 16 * 8 * 3 * 9 and macs["4"] == 8 * 8 * 4 * 8 * 9 and macs["6"] == 256 * 5
    assert s.params == sum(p.numel() for p in net.parameters()) and s.receptive_field == 10
    assert [r.output for r in s.layers][3] == [8, 8, 8]


@pytest.mark.parametrize("name,rf", [("alexnet", 195), ("vgg16", 212), ("resnet18", 435)])
def test_published_receptive_fields(name, rf):
    # Araujo et al., "Computing receptive fields of convolutional neural networks" (Distill 2019), Table 1
    assert summarize(cnnlab.create_model(name), (3, 224, 224)).receptive_field == rf


def test_residual_add_takes_the_larger_branch():
    s = summarize(cnnlab.create_model("resnet20"), (3, 32, 32))
    assert s.receptive_field == 81  # 19 3x3 convs, strides 1, 2, 2: 1 + 2*7 + 4*6 + 8*6 ... = 81
    plain = summarize(cnnlab.create_model("plain20"), (3, 32, 32))
    assert plain.receptive_field == s.receptive_field and plain.macs == s.macs


def test_parse_input_shape():
    assert parse_input_shape("1x28x28") == (1, 28, 28) and parse_input_shape("64") == (3, 64, 64)
    with pytest.raises(cnnlab.CnnlabError, match="--input must look like"):
        parse_input_shape("3by32")


def test_latency_is_measured_and_grows_with_the_work(capsys):
    from cnnlab.cli import main
    from cnnlab.models.summary import measure_latency_ms

    small = cnnlab.create_model("cnn", num_classes=10, arch={"stages": [{"blocks": 1, "width": 8, "kernel": 3}]})
    large = cnnlab.create_model("cnn", num_classes=10, arch={"stages": [{"blocks": 2, "width": 128, "kernel": 5}]})
    fast, slow = (measure_latency_ms(m, (3, 32, 32), precision="fp32") for m in (small, large))
    assert 0 < fast < slow  # about 2,000 times the multiply-adds
    batch = measure_latency_ms(small, (3, 32, 32), precision="fp32", batch=32)
    assert batch > fast  # one pass over 32 images takes longer than over one
    assert small.training  # measured on a copy in eval mode; the caller's model is left as it was
    assert main(["summary", "resnet20", "--latency", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["latency_ms"] > 0


@pytest.mark.parametrize("switch, match", [("kernel_size=99999999999999999999", "too large to build"),
                                           ("width=1e30", "too large to build"),
                                           ("width=nan", "width must be a positive number, got nan")])
def test_a_model_too_large_to_describe_is_one_line(capsys, switch, match):
    from cnnlab.cli import main

    assert main(["summary", "resnet20", "--model-kwargs", switch]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err


@pytest.mark.parametrize("arch, message", [
    ("{stages: [{blocks: 1000000, width: 32, kernel: 3}]}", "stage 1 needs 1 to 100 blocks"),  # counting took minutes
    ("{stages: [{blocks: 1, width: 32}], evil: 1}", "arch: unknown key 'evil'"),
    ("{stages: [{blocks: 1, width: 32, depth: 3}]}", "stage 1 must be a mapping of blocks, width"),
    ("{stages: [{blocks: 1, width: 99999}]}", "a width of 1 to 16384"),
    ("{stages: [{blocks: 1, width: 8}], head: {type: fc, widths: [1e12]}}", "the head's widths"),
    ("{stages: []}", "'stages' must be a list of 1 to 16 stages"),
])
def test_an_arch_past_its_bounds_is_one_line_before_anything_is_counted(tmp_path, capsys, arch, message):
    from cnnlab.cli import main

    (tmp_path / "m.yaml").write_text(f"model: cnn\nmodel_kwargs:\n  arch: {arch}\n")
    assert main(["summary", str(tmp_path / "m.yaml")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
