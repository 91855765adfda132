"""Reach the `cn-clip` reference package (PyPI 1.6.0, installed --no-deps for tests only) without its __init__.

`cn_clip/clip/__init__.py` imports its model and torchvision transforms (torchvision's PyPI build
does not import beside the CPU torch here) and `bert_tokenizer.py` imports `six` (not installed).
So, as tests/core/test_zoo_parity.py does for open_clip, the packages are registered as bare
package objects over the installed folders, `six` and `torchvision` are stubbed just for the
import and removed again, and the modules compared are exactly cn_clip's own files.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch


@functools.cache
def _installed_folder() -> Path | None:
    spec = importlib.util.find_spec("cn_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def cn_clip_folder() -> Path:
    folder = _installed_folder()
    if folder is None:
        pytest.skip("cn-clip is not installed (pip install --no-deps -c constraints.txt cn-clip)")
    return folder


@contextlib.contextmanager
def _stubs():
    six = types.ModuleType("six")
    six.PY2, six.PY3, six.text_type, six.binary_type = False, True, str, bytes
    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    for name in ("Compose", "ToTensor", "Normalize", "Resize", "InterpolationMode", "CenterCrop"):
        setattr(transforms, name, type(name, (), {}))
    tv.transforms = transforms
    stubbed = {"six": six}
    if importlib.util.find_spec("torchvision") is None:
        stubbed.update({"torchvision": tv, "torchvision.transforms": transforms})
    added = {k: v for k, v in stubbed.items() if k not in sys.modules}
    sys.modules.update(added)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def cn_clip_module(name: str) -> types.ModuleType:
    """`cn_clip.clip.<name>` (bert_tokenizer, model, ...) imported from the installed wheel's own file."""
    folder = cn_clip_folder()
    for key, path in (("cn_clip", folder), ("cn_clip.clip", folder / "clip")):
        if key not in sys.modules or not hasattr(sys.modules[key], "__path__"):
            package = types.ModuleType(key)
            package.__path__ = [str(path)]
            sys.modules[key] = package
    with contextlib.suppress(ImportError):
        importlib.import_module("transformers")
    with _stubs():
        package = sys.modules["cn_clip.clip"]
        if name == "model" and not hasattr(package, "_tokenizer"):  # model.py reads the package's tokenizer
            bert = importlib.import_module("cn_clip.clip.bert_tokenizer")
            package._tokenizer = bert.FullTokenizer(vocab_file=str(folder / "clip" / "vocab.txt"))
        return importlib.import_module(f"cn_clip.clip.{name}")


def cn_clip_tokenize(texts: list[str], context_length: int = 52) -> torch.Tensor:
    """`cn_clip.clip.tokenize`'s rows, built from cn_clip's own FullTokenizer and vocab."""
    bert = cn_clip_module("bert_tokenizer")
    full = bert.FullTokenizer(vocab_file=str(cn_clip_folder() / "clip" / "vocab.txt"))
    cls, sep = full.vocab["[CLS]"], full.vocab["[SEP]"]
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [cls, *full.convert_tokens_to_ids(full.tokenize(text))[: context_length - 2], sep]
        out[row, : len(ids)] = torch.tensor(ids)
    return out


@pytest.fixture(scope="session")
def cn_clip_ref() -> types.SimpleNamespace:
    """The cn-clip reference: `.module(name)`, `.tokenize(texts, context_length)`, `.folder`."""
    return types.SimpleNamespace(module=cn_clip_module, tokenize=cn_clip_tokenize, folder=cn_clip_folder())
