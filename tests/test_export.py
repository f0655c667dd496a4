"""`cnnlab export`: one model of every registered family, exported to ONNX and TorchScript, gives PyTorch's logits
(max abs difference <= 1e-4, the same top-1 on every image) from images 0..255 at any batch size, with the
normalisation and test-time augmentation inside and the class names beside it. Run folders are written
directly (model.json and weights of an untrained model, batch-norm statistics and airbench's whitening made
non-trivial): equivalence needs no training."""
import json
import sys

import pytest
import torch

from cnnlab.cli import main
from cnnlab.export import export_run
from cnnlab.models import create_model
from cnnlab.runtime.evaluate import predict_logits
from cnnlab.runtime.files import save_weights

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.load.*:DeprecationWarning")  # torch.jit: maintenance mode

SEARCHED = {"stages": [{"blocks": 1, "width": 8, "kernel": 5}, {"blocks": 1, "width": 16, "kernel": 3}],
            "downsample": "stride", "head": {"type": "fc", "widths": [32]}}
# (model, switches, image size, test-time augmentation): each family at its cheapest honest size
FAMILIES = [
    ("alexnet", {"width": 0.25}, 64, 0),
    ("vgg11_bn", {"width": 0.25}, 32, 0),
    ("resnet18", {}, 32, 0),
    ("resnet20", {}, 32, 0),
    ("plain20", {"width": 0.5}, 32, 0),
    ("airbench94", {"width": 0.25}, 32, 0),  # its whitening layer fitted to images
    ("p4cnn", {}, 29, 1),  # mirror TTA inside the graph

    ("p4m_resnet20", {}, 33, 0),
    ("cnn", {"arch": SEARCHED}, 32, 2),  # the 6-view TTA of airbench's recipe inside the graph
]
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_run(folder, name, switches, size, tta=0):
    """A run folder as the trainer leaves it, for a model with random weights and BN statistics."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=len(CLASSES), in_channels=3, **switches)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._NormBase):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    if hasattr(model, "init_from_data"):
        model.init_from_data(torch.randn(32, 3, size, size))
    folder.mkdir(parents=True)
    spec = {"model": name, "model_kwargs": switches, "num_classes": len(CLASSES), "in_channels": 3,
            "image_size": size, "mean": MEAN, "std": STD, "classes": CLASSES, "precision": "fp32", "tta": tta}
    (folder / "model.json").write_text(json.dumps(spec))
    save_weights(model, folder / "best.safetensors")
    save_weights(model, folder / "last.safetensors")
    return model.eval()


def images(count, size, seed):
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def pytorch_logits(model, x, tta):
    """What cnnlab's own predict path computes, in fp32."""
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    return predict_logits(model, x, mean, std, "fp32", tta=tta)


def assert_same(got, expected, what):
    diff = float((got - expected).abs().max())
    assert diff <= 1e-4, f"{what}: max abs logit difference {diff:.2e}"
    assert torch.equal(got.argmax(1), expected.argmax(1)), f"{what}: top-1 differs"
    return diff


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (run folder, model, ONNX file, TorchScript file), each exported once for the module."""
    done = {}

    def get(name):
        if name not in done:
            _, switches, size, tta = next(f for f in FAMILIES if f[0] == name)
            run = tmp_path_factory.mktemp("export") / name
            model = make_run(run, name, switches, size, tta)
            done[name] = run, model, export_run(run, "onnx")["path"], export_run(run, "torchscript")["path"]
        return done[name]
    return get


@pytest.mark.parametrize("name,switches,size,tta", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_exports_to_onnx_and_torchscript_with_pytorchs_logits(exported, name, switches, size, tta):
    ort = pytest.importorskip("onnxruntime")
    _, model, onnx_file, ts_file = exported(name)
    session = ort.InferenceSession(onnx_file, providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(ts_file)
    diffs = []
    for count, seed in ((5, 1), (1, 2)):  # the batch dimension is dynamic: 5 images, then one
        x = images(count, size, seed)
        expected = pytorch_logits(model, x, tta)
        got = torch.from_numpy(session.run(None, {"images": x.float().numpy()})[0])
        diffs.append(assert_same(got, expected, f"{name} onnx, batch {count}"))
        with torch.no_grad():  # TorchScript takes uint8 as predict does, and float 0..255 alike
            diffs.append(assert_same(scripted(x), expected, f"{name} torchscript uint8, batch {count}"))
            diffs.append(assert_same(scripted(x.float()), expected, f"{name} torchscript float, batch {count}"))
    print(f"\n{name}: max abs logit difference onnx {max(diffs[0::3]):.1e}, "
          f"torchscript {max(diffs[1::3] + diffs[2::3]):.1e}")


def test_class_names_and_input_travel_with_the_files(exported):
    onnx = pytest.importorskip("onnx")
    run, _, onnx_file, ts_file = exported("cnn")
    assert onnx_file == str(run / "model.onnx") and ts_file == str(run / "model.pt")
    model = onnx.load(onnx_file)
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == CLASSES and meta["model"] == "cnn" and meta["tta"] == "2"
    assert meta["input"].startswith("images float32, shape (batch, 3, 32, 32), values 0..255")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, 32, 32]

    beside = json.loads((run / "model.pt.json").read_text())
    assert beside["classes"] == CLASSES and beside["input_shape"] == [None, 3, 32, 32]
    extra = {"cnnlab.json": ""}
    torch.jit.load(ts_file, _extra_files=extra)
    assert json.loads(extra["cnnlab.json"])["classes"] == CLASSES
    assert json.loads((run / "model.json").read_text())["model"] == "cnn"  # the run's own spec untouched


def test_export_command_prints_the_file_and_its_check(tmp_path, capsys):
    make_run(tmp_path / "run", "resnet20", {"width": 0.25}, 16)
    assert main(["export", str(tmp_path / "run"), "--format", "torchscript", "--out", str(tmp_path / "r.pt")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"resnet20 (best weights) exported to {tmp_path / 'r.pt'}"
    assert "uint8 or float32, shape (batch, 3, 16, 16), values 0..255" in out[1]
    assert out[2] == f"  output: logits for 10 classes; class names in {tmp_path / 'r.pt.json'} beside it"
    assert out[3].startswith("  checked on 4 random images against PyTorch: max abs logit difference ")
    assert float(out[3].rsplit(" ", 1)[1]) <= 1e-4


def test_onnx_export_without_its_packages_says_what_to_install(tmp_path, capsys, monkeypatch):
    make_run(tmp_path / "run", "resnet20", {"width": 0.25}, 16)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: importing it fails
    assert main(["export", str(tmp_path / "run"), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err == "cnnlab: error: --format onnx needs onnxscript: pip install 'cnnlab[export]'\n"
    assert not (tmp_path / "run" / "model.onnx").exists()


def test_export_refuses_what_is_not_a_run_or_a_place_to_write(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "torchscript"]) == 2
    assert capsys.readouterr().err == f"cnnlab: error: export {tmp_path}: not a cnnlab run folder (no model.json)\n"
    make_run(tmp_path / "run", "resnet20", {"width": 0.25}, 16)
    assert main(["export", str(tmp_path / "run"), "--format", "torchscript", "--out",
                 str(tmp_path / "missing" / "m.pt")]) == 2
    assert "the folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), "--format", "torchscript", "--out", str(tmp_path / "run" / "model")]) == 2
    assert "would overwrite the run's own files" in capsys.readouterr().err  # model.json beside it is the run's
