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


# oneDNN compares the variable's value, upper-cased, with its list of ISA names and ignores any other value (no
# cap): measured on an AMX Xeon with ONEDNN_VERBOSE=1, " AVX2", "AVX2 " and the misspelt "AVX512_CORE_BF" all ran
# brg_matmul:avx10_1_512_amx; "avx2" did cap.


@pytest.mark.parametrize("value", [" AVX2", "AVX2 ", "AVX512_CORE_BF", "AVX2,AVX512_CORE", "DEFAULT", "all"])
def test_a_value_onednn_does_not_know_caps_nothing(machine, value: str) -> None:
    machine(AMX_XEON, ONEDNN_MAX_CPU_ISA=value)
    assert (cpu.onednn_isa_cap(), cpu.amx_supported(), cpu.bf16_supported()) == (None, True, True)


@pytest.mark.parametrize(
    ("value", "cap", "amx", "bf16"),
    [
        ("avx2", "AVX2", False, False),
        ("avx512_core_amx_fp16", "AVX512_CORE_AMX_FP16", True, True),
        ("AVX10_2_512_AMX_2", "AVX10_2_512_AMX_2", True, True),
        ("AVX10_1_512", "AVX10_1_512", False, True),
    ],
)
def test_a_known_name_in_any_case_is_the_cap(machine, value: str, cap: str, amx: bool, bf16: bool) -> None:
    machine(AMX_XEON, ONEDNN_MAX_CPU_ISA=value)
    assert (cpu.onednn_isa_cap(), cpu.amx_supported(), cpu.bf16_supported()) == (cap, amx, bf16)


def test_the_variable_onednn_reads_first_is_the_one_named(machine) -> None:
    """ONEDNN_ wins over DNNL_ when it holds anything; a space-only ONEDNN_ value is read (and ignored) first."""
    machine(AMX_XEON, ONEDNN_MAX_CPU_ISA=" ", DNNL_MAX_CPU_ISA="AVX2")
    assert (cpu.onednn_isa_cap(), cpu.bf16_supported()) == (None, True)
    machine(AMX_XEON, ONEDNN_MAX_CPU_ISA="", DNNL_MAX_CPU_ISA="avx512_core")
    assert cpu.no_bf16_reason() == "DNNL_MAX_CPU_ISA=avx512_core keeps oneDNN from native bf16 matmuls"
