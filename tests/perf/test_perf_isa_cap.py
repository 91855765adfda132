"""`ONEDNN_MAX_CPU_ISA` outranks the CPU's flags: the kernel rules and the bf16 refusal read the machine
oneDNN will drive (`clipforge.inference.cpu.onednn_isa_cap`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from clipforge.inference import cpu
from clipforge.inference.encoder import check_precision
from clipforge.inference.precision import Bf16UnsupportedError

AMX_XEON = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"})


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Set the flags and the cap; the cached answers are asked again."""

    def set_machine(flags: frozenset[str], **env: str) -> None:
        for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)
        cpu.bf16_supported.cache_clear()
        cpu.amx_supported.cache_clear()

    yield set_machine
    cpu.bf16_supported.cache_clear()
    cpu.amx_supported.cache_clear()


@pytest.mark.parametrize(
    ("env", "amx", "bf16"),
    [
        ({}, True, True),
        ({"ONEDNN_MAX_CPU_ISA": "default"}, True, True),
        ({"ONEDNN_MAX_CPU_ISA": "AVX10_1_512_AMX"}, True, True),
        ({"ONEDNN_MAX_CPU_ISA": "avx512_core_amx"}, True, True),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, False, True),
        ({"DNNL_MAX_CPU_ISA": "AVX512_CORE_BF16"}, False, True),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, False, False),
        ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, False, False),
    ],
)
def test_the_cap_decides_amx_and_native_bf16(machine, env: dict[str, str], amx: bool, bf16: bool) -> None:
    machine(AMX_XEON, **env)
    assert (cpu.amx_supported(), cpu.bf16_supported()) == (amx, bf16)


def test_a_cap_below_bf16_is_named_in_the_refusal(machine) -> None:
    machine(AMX_XEON, ONEDNN_MAX_CPU_ISA="AVX2")
    with pytest.raises(Bf16UnsupportedError) as raised:
        check_precision("bf16")
    assert str(raised.value) == (
        "--precision bf16: ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN from native bf16 matmuls, so bf16 would be "
        "emulated and slower than fp32; use --precision fp32"
    )
    machine(frozenset({"avx512f"}))
    with pytest.raises(Bf16UnsupportedError, match="^--precision bf16: this CPU has no native bf16 matmuls"):
        check_precision("bf16")


@pytest.mark.skipif(not {"amx_bf16", "amx_tile"} <= cpu.cpu_flags(), reason="needs a CPU with AMX")
def test_on_an_amx_cpu_the_cap_takes_amx_from_onednn_and_from_the_rules() -> None:
    """The engine's own account (ONEDNN_VERBOSE) of the kernel it ran, beside the rule's answer."""
    script = (
        "import torch\n"
        "from clipforge.inference.cpu import amx_supported\n"
        "a = torch.ones(64, 64, dtype=torch.bfloat16)\n"
        "a @ a\n"
        "print('amx_supported', amx_supported())\n"
    )
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    kernels = [line for line in out.stdout.splitlines() if ",exec,cpu,matmul," in line]
    assert kernels and all("amx" not in line for line in kernels), out.stdout[-2000:]
    assert "amx_supported False" in out.stdout
