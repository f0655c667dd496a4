"""Which precision `--precision auto` picks on a CPU, and how processes of one machine share its cores."""
import os

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


def test_workers_of_one_machine_get_disjoint_shares_of_its_cores(monkeypatch):
    monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
    assert device.core_shares(2) == [{0, 2, 4}, {1, 3}]
    assert device.core_shares(1) == [{0, 1, 2, 3, 4}]
    assert device.core_shares(7) == [{0}, {1}, {2}, {3}, {4}, {0}, {1}]  # more workers than cores: some share


def test_running_on_confines_the_process_for_the_block_and_frees_it_after():
    before = os.sched_getaffinity(0)
    one = {min(before)}
    with device.running_on(one):
        assert os.sched_getaffinity(0) == one and device.use_all_cores() == 1
    assert os.sched_getaffinity(0) == before
    device.use_all_cores()
