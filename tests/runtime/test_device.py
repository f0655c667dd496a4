"""Which precision `--precision auto` picks on a CPU."""
import pytest
import torch

from cnnlab.runtime import device


@pytest.mark.parametrize("isa", ["AVX2", "avx512_core", "AVX512_CORE_VNNI"])
def test_onednn_held_below_bf16_means_no_native_bf16_and_auto_is_fp32(monkeypatch, isa):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert not device.cpu_has_native_bf16()
    assert device.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert device.resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for, it is what it gets


def test_auto_follows_the_cpu_flags(monkeypatch, tmp_path):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    native = device.cpu_has_native_bf16()
    assert native == any(f in open("/proc/cpuinfo").read() for f in ("avx512_bf16", "amx_bf16"))
    assert device.resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
