"""Muon against a reference: airbench94_muon's Newton-Schulz iteration and optimiser step, written out here
as that script has them (github.com/KellerJordan/cifar10-airbench, airbench94_muon.py), in fp32."""
import pytest
import torch

from cnnlab.train import TrainConfig
from cnnlab.train.muon import Muon, newton_schulz
from cnnlab.train.optim import build_optimizer


def reference_newton_schulz(G, steps=3, eps=1e-7):
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.float()  # the reference runs in bf16 on a GPU; fp32 here, as cnnlab on a CPU
    X /= (X.norm() + eps)
    if G.size(0) > G.size(1):
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(0) > G.size(1):
        X = X.T
    return X


def reference_muon_step(p, buf, lr, momentum, nesterov=True):
    g = p.grad
    buf.mul_(momentum).add_(g)
    g = g.add(buf, alpha=momentum) if nesterov else buf
    p.data.mul_(len(p.data) ** 0.5 / p.data.norm())
    update = reference_newton_schulz(g.reshape(len(g), -1)).view(g.shape)
    p.data.add_(update, alpha=-lr)


@pytest.mark.parametrize("shape", [(16, 72), (72, 16), (32, 32)])
@pytest.mark.parametrize("steps", [1, 3, 5])
def test_newton_schulz_matches_the_reference(shape, steps):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(newton_schulz(g, steps), reference_newton_schulz(g, steps), rtol=1e-5, atol=1e-6)


def test_newton_schulz_orthogonalises():
    """Five iterations bring singular values spread over a factor of 20 into the documented band around 1."""
    gen = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(32, 32, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(288, 32, generator=gen))
    g = u @ torch.diag(torch.linspace(0.05, 1.0, 32)) @ v.T
    s = torch.linalg.svdvals(newton_schulz(g, steps=5))
    assert s.min() > 0.5 and s.max() < 1.5, s


def test_muon_steps_match_the_reference_and_sgd_groups_match_torch_sgd():
    gen = torch.Generator().manual_seed(2)
    conv = torch.randn(8, 4, 3, 3, generator=gen)
    bias = torch.randn(8, generator=gen)
    ours_conv, ours_bias = conv.clone().requires_grad_(), bias.clone().requires_grad_()
    ref_conv, ref_bias = conv.clone().requires_grad_(), bias.clone().requires_grad_()
    ours = Muon([{"params": [ours_conv], "muon": True, "lr": 0.24, "momentum": 0.6},
                 {"params": [ours_bias], "lr": 0.05, "momentum": 0.85, "weight_decay": 1e-3}])
    sgd = torch.optim.SGD([ref_bias], lr=0.05, momentum=0.85, nesterov=True, weight_decay=1e-3)
    buf = torch.zeros_like(conv)
    for _ in range(4):
        grads = torch.randn(8, 4, 3, 3, generator=gen), torch.randn(8, generator=gen)
        ours_conv.grad, ref_conv.grad = grads[0].clone(), grads[0].clone()
        ours_bias.grad, ref_bias.grad = grads[1].clone(), grads[1].clone()
        ours.step()
        with torch.no_grad():
            reference_muon_step(ref_conv, buf, 0.24, 0.6)
        sgd.step()
    torch.testing.assert_close(ours_conv, ref_conv, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_bias, ref_bias, rtol=1e-6, atol=1e-7)


def test_the_muon_option_puts_conv_filters_in_muon_groups_and_the_rest_in_sgd():
    from cnnlab.models import create_model

    model = create_model("resnet20", num_classes=10, in_channels=1, width=0.25)
    cfg = TrainConfig(optimizer="muon", lr=0.1, muon_lr=0.3, muon_momentum=0.5, weight_decay=5e-4).validate()
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, Muon)
    muon = [p for g in opt.param_groups if g["muon"] for p in g["params"]]
    assert muon and all(p.ndim == 4 for p in muon)
    assert {id(p) for p in muon} == {id(p) for p in model.parameters() if p.ndim == 4}
    for g in opt.param_groups:
        if g["muon"]:
            assert (g["lr"], g["momentum"], g["weight_decay"]) == (0.3, 0.5, 0.0)
        else:
            assert g["lr"] == 0.1 and g["momentum"] == 0.9


class Interrupted(Exception):
    pass


def test_muon_trains_and_resumes_bit_identically(tmp_path):
    from safetensors.torch import load_file

    from cnnlab.train import train

    cfg = lambda name: TrainConfig(model="resnet20", model_kwargs={"width": 0.25}, data="digits",  # noqa: E731
                                   image_size=12, batch_size=64, epochs=3, optimizer="muon", quiet=True,
                                   report=False, precision="fp32", out=str(tmp_path / name))
    s = train(cfg("whole"))
    assert s["status"] == "finished" and s["test_accuracy"] > 0.8

    def interrupt(record):
        if record["epoch"] == 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(cfg("resumed"), on_epoch=interrupt)
    train(cfg("resumed"), resume=True)  # the momentum buffers come back with the checkpoint
    a, b = (load_file(str(tmp_path / name / "last.safetensors")) for name in ("whole", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
