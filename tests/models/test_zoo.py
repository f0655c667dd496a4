"""Parameter counts, MACs and torchvision compatibility of the model zoo (rows of ../shared/REFERENCE.md)."""
import gzip
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import cnnlab
from cnnlab.models.summary import summarize
from tests.models.reference_weights import TORCHVISION_MODELS, reference_input, reference_state

# REFERENCE.md, "Parameter counts and multiply-adds (1000 classes, 3x224x224 input)"
IMAGENET = {
    "alexnet": (61_100_840, 0.714), "vgg11": (132_863_336, 7.609), "vgg11_bn": (132_868_840, 7.609),
    "vgg13": (133_047_848, 11.308), "vgg13_bn": (133_053_736, 11.308), "vgg16": (138_357_544, 15.470),
    "vgg16_bn": (138_365_992, 15.470), "vgg19": (143_667_240, 19.632), "vgg19_bn": (143_678_248, 19.632),
    "resnet18": (11_689_512, 1.814), "resnet34": (21_797_672, 3.664), "resnet50": (25_557_032, 4.089),
    "resnet101": (44_549_160, 7.801), "resnet152": (60_192_808, 11.514),
}
# REFERENCE.md, "CIFAR ResNets", exact counts
CIFAR = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018,
         "resnet110": 1_727_962, "resnet1202": 19_421_274}

REFERENCE_FILE = Path(__file__).with_name("torchvision_reference.json.gz")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(name: str, **kw) -> nn.Module:
    """Build without allocating or initialising weights: shapes only, fast even for VGG-19."""
    with torch.device("meta"):
        return cnnlab.create_model(name, **kw)


@pytest.mark.parametrize("name", list(IMAGENET))
def test_imagenet_params_equal_torchvision(name):
    assert n_params(on_meta(name, num_classes=1000)) == IMAGENET[name][0]


@pytest.mark.parametrize("name", ["alexnet", "vgg11", "resnet18", "resnet50"])
def test_imagenet_macs_match_reference(name):
    s = summarize(cnnlab.create_model(name), (3, 224, 224))
    assert round(s.macs / 1e9, 3) == IMAGENET[name][1]


@pytest.mark.parametrize("name", list(CIFAR))
def test_cifar_resnet_params_exact(name):
    assert n_params(cnnlab.create_model(name, num_classes=10)) == CIFAR[name]


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_nets_have_resnet_params_and_no_skips(depth):
    plain, res = cnnlab.create_model(f"plain{depth}"), cnnlab.create_model(f"resnet{depth}")
    assert n_params(plain) == n_params(res) == CIFAR[f"resnet{depth}"]
    res.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    plain.eval(), res.eval()
    assert not torch.allclose(plain(x), res(x))  # same weights, different graph: the skips are gone


@pytest.fixture(scope="module")
def torchvision_reference():
    return json.loads(gzip.decompress(REFERENCE_FILE.read_bytes()))["models"]


@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_state_dict_keys_and_shapes_equal_torchvision(name, torchvision_reference):
    ours = [(k, list(v.shape)) for k, v in on_meta(name, num_classes=1000).state_dict().items()]
    assert ours == [tuple(p) for p in torchvision_reference[name]["state_dict"]]  # same keys, shapes, order


# One model per layout (the VGG depths differ only in their channel plan, checked by the keys above).
@pytest.mark.parametrize("name", ["alexnet", "vgg11", "vgg11_bn", "resnet18", "resnet50"])
def test_torchvision_weights_give_same_outputs(name, torchvision_reference):
    ref = torchvision_reference[name]
    model = cnnlab.create_model(name, num_classes=1000).eval()
    ours = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    model.load_state_dict(reference_state(ours), strict=True)
    with torch.no_grad():
        logits = model(reference_input())[0]
    torch.testing.assert_close(logits, torch.tensor(ref["logits"]), rtol=1e-4, atol=1e-4)
