"""`clipforge.models` imports no torch until a network is asked for, and `clipforge models` prints what it did.

The package's ``__init__`` imported `clip` and `factory` eagerly, so reading the architecture table
(`clipforge.models.configs`, `clipforge.models.summary`: plain dicts and a JSON file of parameter counts) paid
~1.1 s of ``import torch``. The names now load on first use (`clipforge._lazy`); every public name still
resolves to the object of the submodule it always came from.

`clipforge models` itself imports no torch now (it came in through `clipforge.zeroshot`'s package init, the
shipped models' folder named in `clipforge.api`, `weights.save` and the cn-* configs beside Chinese-CLIP's network:
each is now reached without it); the listing stays byte for byte what it was.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

# The public names of `clipforge.models` and the submodule each one always came from (the eager __init__).
PUBLIC = {
    "ACTIVATIONS": "configs", "ALIASES": "configs", "ARCH_CONFIGS": "configs", "OPEN_CLIP_MODELS": "configs",
    "OPENAI_MODELS": "configs", "activation_of": "configs", "canonical_name": "configs", "get_config": "configs",
    "list_configs": "configs", "register_config": "configs",
    "CLIP": "clip", "config_from_state_dict": "clip", "matching_architectures": "clip",
    "build_model": "factory", "create_model_from_config": "factory",
    "ConfigError": "validate", "validate_config": "validate",
}

# Lines `clipforge models` printed before the package went lazy (header, an OpenAI model, a family model, the
# shipped model, a Chinese-CLIP model): the table's format and its numbers.
KNOWN_LINES = [
    "model                             params     image      text  input  embed  activation cached languages",
    "ViT-B/32                          151.3M     87.8M     63.4M    224    512  quick_gelu no     en",
    "ViT-B-16-SigLIP                   203.2M     92.9M    110.3M    224    768  gelu_tanh  no     en",
    "clipforge-tiny                      8.8M      5.4M      3.4M     32    256  quick_gelu yes    en",
    "cn-ViT-B-16                       188.3M     86.2M    102.1M    224    512  quick_gelu no     zh",
]

_TABLE_PROBE = """
import importlib, json, sys
import clipforge.models as models
from clipforge.models.summary import summarize_models
rows = summarize_models(include_test=True)
before = "torch" in sys.modules
public = json.loads(sys.argv[1])
same = {name: getattr(models, name) is getattr(importlib.import_module("clipforge.models." + source), name)
        for name, source in public.items()}
print(json.dumps({"torch_before_a_network": before, "rows": len(rows), "all": sorted(models.__all__),
                  "same": same, "dir_has_all": set(public) <= set(dir(models)),
                  "torch_after_CLIP": "torch" in sys.modules}))
"""


def test_the_architecture_table_imports_no_torch_and_every_public_name_still_resolves() -> None:
    done = subprocess.run([sys.executable, "-c", _TABLE_PROBE, json.dumps(PUBLIC)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout)
    assert got["torch_before_a_network"] is False  # clipforge.models + summary + 100 rows: no torch
    assert got["rows"] > 90
    assert got["all"] == sorted(PUBLIC)
    assert got["same"] == dict.fromkeys(PUBLIC, True)  # `from clipforge.models import X`: the same object
    assert got["dir_has_all"] is True
    assert got["torch_after_CLIP"] is True  # asking for the network does import torch (the probe is live)


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    import clipforge.models

    with pytest.raises(AttributeError, match=r"module 'clipforge.models' has no attribute 'NOT_A_NAME'"):
        _ = clipforge.models.NOT_A_NAME


@pytest.fixture(scope="module")
def listed() -> subprocess.CompletedProcess:
    """`python -X importtime -m clipforge models`: the printed table, and on stderr every module it imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "clipforge", "models"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_clipforge_models_prints_the_same_table(listed: subprocess.CompletedProcess, capsys) -> None:
    from clipforge.cli.main import main

    lines = listed.stdout.splitlines()
    assert lines[0] == KNOWN_LINES[0]
    assert [line for line in KNOWN_LINES[1:] if line not in lines] == []
    assert main(["models"]) == 0  # the in-process listing, line for line
    assert capsys.readouterr().out == listed.stdout


def test_clipforge_models_imports_no_torch(listed: subprocess.CompletedProcess) -> None:
    imported = {line.rsplit("|", 1)[-1].strip() for line in listed.stderr.splitlines()
                if line.startswith("import time:")}
    assert "clipforge.models.summary" in imported  # the importtime listing is read (the control)
    assert [m for m in imported if re.fullmatch(r"torch(\..*)?", m)] == []
