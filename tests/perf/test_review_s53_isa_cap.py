"""`ONEDNN_MAX_CPU_ISA` counts only as oneDNN reads it: a whole ISA name in any case.

oneDNN compares the variable's value, upper-cased, with its list of ISA names and ignores any other value (no
cap). Measured on an AMX Xeon with ONEDNN_VERBOSE=1: `" AVX2"`, `"AVX2 "` and the misspelt `"AVX512_CORE_BF"`
all ran `brg_matmul:avx10_1_512_amx`; `"avx2"` did cap. The rules read every non-empty value as a cap, so those
values turned AMX off and refused `--precision bf16` naming a variable that changed nothing.
"""

from __future__ import annotations

import pytest

from clipforge.inference import cpu

AMX_XEON = frozenset({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"})


@pytest.fixture
def amx_machine(monkeypatch: pytest.MonkeyPatch):
    """An AMX Xeon's flags and the ISA variables as given; the cached answers are asked again."""

    def set_env(**env: str) -> None:
        for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(cpu, "cpu_flags", lambda: AMX_XEON)
        cpu.bf16_supported.cache_clear()
        cpu.amx_supported.cache_clear()

    yield set_env
    cpu.bf16_supported.cache_clear()
    cpu.amx_supported.cache_clear()


@pytest.mark.parametrize("value", [" AVX2", "AVX2 ", "AVX512_CORE_BF", "AVX2,AVX512_CORE", "DEFAULT", "all"])
def test_a_value_onednn_does_not_know_caps_nothing(amx_machine, value: str) -> None:
    amx_machine(ONEDNN_MAX_CPU_ISA=value)
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
def test_a_known_name_in_any_case_is_the_cap(
    amx_machine, value: str, cap: str, amx: bool, bf16: bool
) -> None:
    amx_machine(ONEDNN_MAX_CPU_ISA=value)
    assert (cpu.onednn_isa_cap(), cpu.amx_supported(), cpu.bf16_supported()) == (cap, amx, bf16)


def test_the_variable_onednn_reads_first_is_the_one_named(amx_machine) -> None:
    """ONEDNN_ wins over DNNL_ when it holds anything; a space-only ONEDNN_ value is read (and ignored) first."""
    amx_machine(ONEDNN_MAX_CPU_ISA=" ", DNNL_MAX_CPU_ISA="AVX2")
    assert (cpu.onednn_isa_cap(), cpu.bf16_supported()) == (None, True)
    amx_machine(ONEDNN_MAX_CPU_ISA="", DNNL_MAX_CPU_ISA="avx512_core")
    assert cpu.no_bf16_reason() == "DNNL_MAX_CPU_ISA=avx512_core keeps oneDNN from native bf16 matmuls"
