"""transformers' own tokenizer classes, read from files: open_clip's ``HFTokenizer``.

open_clip's transformers text towers (XLM-R, RoBERTa, NLLB, mT5) tokenize with
``AutoTokenizer.from_pretrained(<hub name>)``: whitespace-cleaned text, then the tokenizer's
special tokens, truncation and padding to the context (77) with its pad id. clipforge does the
same with the class the config names (``tokenizer.class``, e.g. ``XLMRobertaTokenizer``), read
from the folder holding the files the hub repository publishes (``tokenizer.json``, or mT5's
``spiece.model``, with ``tokenizer_config.json`` where the repository has one). Nothing is
fetched here: the files come beside the checkpoint or through the verified downloader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["encode_plain", "open_transformers_tokenizer", "transformers_ids"]


def open_transformers_tokenizer(spec: dict[str, Any], path: Path, error: type[Exception] = OSError) -> Any:
    """transformers' tokenizer class `spec["class"]` from the folder of `path` (local files only);
    failures raise `error` (the caller's "tokenizer unavailable" class) with one line."""
    TokenizerUnavailableError = error  # noqa: N806 - the caller's class

    try:
        import transformers
    except ImportError:
        raise TokenizerUnavailableError(
            "this model's tokenizer is transformers' own: pip install 'clipforge[families]' (installs transformers)"
        ) from None
    name = str(spec.get("class", ""))
    cls = getattr(transformers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained") or not name.endswith("Tokenizer"):
        raise TokenizerUnavailableError(f"tokenizer class {name!r} is not a transformers tokenizer")
    try:
        return cls.from_pretrained(str(Path(path).parent), local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise TokenizerUnavailableError(f"{path}: transformers' {name} could not read it ({exc})") from None


def transformers_ids(tokenizer: Any, texts: list[str], length: int) -> list[list[int]]:
    """Ids padded and truncated to `length`, as open_clip's HFTokenizer asks for them."""
    out = tokenizer(texts, max_length=length, padding="max_length", truncation=True)
    return [list(row) for row in out["input_ids"]]


def encode_plain(tokenizer: Any, text: str) -> list[int]:
    """The ids of one text without special tokens or padding."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
