"""airbench94's switches: `pool_first` (the last groups max-pool before their first conv) and `widths` (each
group's channels)."""
import pytest
import torch
import torch.nn.functional as F

import cnnlab
from cnnlab import CnnlabError
from cnnlab.models.summary import summarize


def test_pool_first_group_is_pool_then_conv():
    torch.manual_seed(0)
    model = cnnlab.create_model("airbench94", num_classes=10, pool_first=1).eval()
    group, x = model.layer3, torch.randn(2, 256, 7, 7)
    # the reference, written with torch's functional ops: pool, conv, norm, act, conv, norm, act
    h = F.conv2d(F.max_pool2d(x, 2), group.conv1.weight, padding=1)
    h = F.gelu(F.batch_norm(h, group.norm1.running_mean, group.norm1.running_var, group.norm1.weight,
                            group.norm1.bias, eps=group.norm1.eps))
    h = F.conv2d(h, group.conv2.weight, padding=1)
    h = F.gelu(F.batch_norm(h, group.norm2.running_mean, group.norm2.running_var, group.norm2.weight,
                            group.norm2.bias, eps=group.norm2.eps))
    assert torch.allclose(group(x), h, atol=1e-5)
    assert not model.layer2.pool_first and not model.layer1.pool_first


@pytest.mark.parametrize("n,convs_at_3x3,work", [(0, 1, 1.0), (1, 2, 0.80), (2, 2, 0.58)])
def test_pool_first_runs_convs_on_smaller_maps_for_less_work(n, convs_at_3x3, work):
    model = cnnlab.create_model("airbench94", num_classes=10, pool_first=n)
    base = summarize(cnnlab.create_model("airbench94", num_classes=10), (3, 32, 32))
    s = summarize(model, (3, 32, 32))
    sides = {row.name: row.output[-1] for row in s.layers if row.type == "Conv2d"}
    assert sum(side == 3 for side in sides.values()) == convs_at_3x3
    assert sides["layer2.conv1"] == (7 if n >= 2 else 15)
    assert s.macs / base.macs == pytest.approx(work, abs=0.005)
    assert model.eval()(torch.zeros(1, 3, model.min_input_size, model.min_input_size)).shape == (1, 10)


@pytest.mark.parametrize("value,message", [(4, "pool_first must be 0, 1, 2 or 3"), (-1, "must be 0, 1, 2 or 3"),
                                           ("1", "pool_first='1' must be an int"), (1.0, "must be an int")])
def test_bad_pool_first_is_one_clear_error(value, message):
    with pytest.raises(CnnlabError, match=message):
        cnnlab.create_model("airbench94", pool_first=value)


def test_widths_set_each_groups_channels_and_the_work_follows():
    model = cnnlab.create_model("airbench94", num_classes=10, widths="32,192,128")
    convs = [(m.in_channels, m.out_channels) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [(3, 24), (24, 32), (32, 32), (32, 192), (192, 192), (192, 128), (128, 128)]
    assert model.fc.in_features == 128
    # the MACs of each conv at 32x32 input, counted by hand: whitening 31x31, then 15, 7 and 3 after each pool
    by_hand = (31**2 * 3 * 24 * 4 + 31**2 * 24 * 32 * 9 + 15**2 * 32 * 32 * 9 + 15**2 * 32 * 192 * 9
               + 7**2 * 192 * 192 * 9 + 7**2 * 192 * 128 * 9 + 3**2 * 128 * 128 * 9 + 128 * 10)
    assert summarize(model, (3, 32, 32)).macs == by_hand
    def group_widths(m):
        return [m.layer1.conv1.out_channels, m.layer2.conv1.out_channels, m.layer3.conv1.out_channels]

    assert group_widths(cnnlab.create_model("airbench94", num_classes=10)) == [64, 256, 256]
    assert group_widths(cnnlab.create_model("airbench94", num_classes=10, widths="64,128,128", width=0.5)) == \
        [32, 64, 64]


@pytest.mark.parametrize("value", ["32,256", "32,256,256,256", "0,256,256", "32,,256", "32,256,x", "-32,256,256",
                                   "32,256,99999999", "３2,256,256", 64, ""])
def test_bad_widths_are_one_clear_error(value):
    with pytest.raises(CnnlabError, match="widths must be three channel counts|switch widths=.* must be a str"):
        cnnlab.create_model("airbench94", widths=value)


def test_a_single_number_for_widths_shows_the_three_counts_it_takes(capsys):
    from cnnlab.cli import main

    assert main(["summary", "airbench94", "--model-kwargs", "widths=64"]) == 2
    err = capsys.readouterr().err
    assert "widths=64 must be a str" in err and "'64,256,256'" in err and len(err.strip().splitlines()) == 1


def test_the_narrow_airbench_is_airbench94_with_a_32_channel_first_group():
    narrow = cnnlab.create_model("airbench94_narrow", num_classes=10)
    same = cnnlab.create_model("airbench94", num_classes=10, widths="32,256,256")
    assert [p.shape for p in narrow.parameters()] == [p.shape for p in same.parameters()]
    work = summarize(narrow, (3, 32, 32)).macs / summarize(cnnlab.create_model("airbench94"), (3, 32, 32)).macs
    assert work == pytest.approx(0.75, abs=0.001)
