"""What a transformers SigLIP folder's tokenizer files say: which tokenizer, its special ids, its languages.

Decisions owned here, each from the tokenizer files, never from ``config.json``'s ``text_config`` ids:

- which file: the one of ``spiece.model`` / ``tokenizer.json`` present; with both or neither,
  ``tokenizer_config.json``'s ``tokenizer_class`` (``Gemma*``: SigLIP 2's ``tokenizer.json``; ``Siglip*``/``T5*``:
  ``spiece.model``), else the vocabulary (Gemma's 256,000 rows: ``tokenizer.json``). A missing file is named by
  the first text (it was always ``spiece.model`` for a Gemma folder of another vocabulary size).
- the end and padding ids: ``tokenizer_config.json``'s ``eos_token`` / ``pad_token`` (``</s>`` when absent, as
  transformers' ``SiglipTokenizer``), looked up in the tokenizer file. transformers 5 writes a SigLIP's whole
  ``text_config`` with ``SiglipTextConfig``'s unused defaults (``eos_token_id`` 49407): read as the end id, a
  1,000 / 32,000-row text tower got an IndexError traceback on the first text.
- every id the tokenizer can emit fits the text tower's token embeddings, else one line naming the folder, the
  file and the field. A ``tokenizer.json`` is read up to its vocabulary for this (`_json_vocabulary`), not
  built as a `tokenizers.Tokenizer`: the text tokenizer builds that for the first text, and a second build of
  SigLIP 2's 256,000-row Gemma file cost every load 0.6 s.
- the languages: a Gemma tokenizer (SigLIP 2) or SigLIP's 250,000-piece i18n vocabulary is multilingual,
  as the registry's configs of those families say (`zeroshot.languages.model_languages`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from clipforge.weights.errors import CheckpointFormatError, config_bytes, json_object, member
from clipforge.weights.torch_pickle import brief

__all__ = ["GEMMA_VOCAB", "folder_languages", "folder_tokenizer"]

GEMMA_VOCAB = 256_000  # SigLIP 2's Gemma tokenizer
I18N_VOCAB = 250_000  # SigLIP's multilingual SentencePiece (ViT-B-16-SigLIP-i18n-256)
_CONFIG = "tokenizer_config.json"
TOKENIZER_JSON_LIMIT = 100_000_000
"""Bytes of a ``tokenizer.json`` read at most: SigLIP 2's Gemma file, the largest real one, is about 34 MB."""


def _tokenizer_config(directory: Path) -> dict[str, Any]:
    """The folder's ``tokenizer_config.json`` (at most 5 MB read, a longer one refused: transformers' files list
    their added tokens, a few thousand at most), {} when there is none; one that is no regular file is named, not
    passed over for the defaults."""
    path = directory / _CONFIG
    if not member(path):
        return {}
    return json_object(path, 5_000_000)


def _token(config: dict[str, Any], key: str, default: str | None) -> str | None:
    """A special token's text: a string, or transformers' serialised ``AddedToken`` ({"content": ...})."""
    value = config.get(key, default)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) or value is None else default


def _kind(directory: Path, config: dict[str, Any], vocab_size: int | None) -> str:
    """One of the two files present decides; with both or neither, the ``tokenizer_class``, else the vocabulary."""
    cls = str(config.get("tokenizer_class") or "")
    spiece, json_file = member(directory / "spiece.model"), member(directory / "tokenizer.json")
    if spiece != json_file:
        return "sentencepiece" if spiece else "hf-json"
    if cls.startswith("Gemma"):
        return "hf-json"
    if cls.startswith(("Siglip", "T5")) or spiece:
        return "sentencepiece"
    return "hf-json" if vocab_size == GEMMA_VOCAB else "sentencepiece"


def _too_many(directory: Path, file: str, count: int, vocab_size: int | None) -> None:
    if vocab_size is not None and count > vocab_size:
        raise CheckpointFormatError(
            f"{directory}: its tokenizer {file} has {count:,} tokens, but the text tower has {vocab_size:,} token "
            "embeddings (config.json field 'text_config.vocab_size' and the token_embedding tensor): ids past "
            f"{vocab_size - 1:,} would not fit; the folder's tokenizer is not this model's")


def _spiece_ids(directory: Path, config: dict[str, Any], vocab_size: int | None) -> dict[str, int]:
    """eos/pad ids of the folder's ``spiece.model`` (1/1 when the sentencepiece package is absent: its first
    text then says the package is missing)."""
    try:
        import sentencepiece as spm
    except ImportError:
        return {"eos_id": 1, "pad_id": 1}
    try:
        sp = spm.SentencePieceProcessor(model_file=str(directory / "spiece.model"))
    except (OSError, RuntimeError) as err:
        raise CheckpointFormatError(f"{directory / 'spiece.model'} is not a SentencePiece model: {err}") from None
    _too_many(directory, "spiece.model", int(sp.get_piece_size()), vocab_size)
    ids = {}
    for key, field in (("eos_id", "eos_token"), ("pad_id", "pad_token")):
        token = _token(config, field, "</s>")
        found = sp.piece_to_id(token) if token else -1
        if token is None or found < 0 or sp.id_to_piece(found) != token:
            raise CheckpointFormatError(f"{directory / _CONFIG} field {field!r} = {brief(token)} is not a piece of "
                                        "spiece.model")
        ids[key] = int(found)
    return ids


_WHITESPACE = " \t\n\r"


def _members(text: str, pos: int) -> Generator[tuple[str, int], int, None]:
    """The members of the JSON object starting at `pos`: each key and where its value starts. The caller
    decodes (or skips) each value and sends back where it ends; a malformed object is a ValueError."""
    decoder = json.JSONDecoder()
    pos = _skip(text, pos)
    if text[pos:pos + 1] != "{":
        raise ValueError("not a JSON object")
    pos = _skip(text, pos + 1)
    if text[pos:pos + 1] == "}":
        return
    while True:
        key, pos = decoder.raw_decode(text, pos)
        pos = _skip(text, pos)
        if not isinstance(key, str) or text[pos:pos + 1] != ":":
            raise ValueError("not a JSON object")
        pos = yield key, _skip(text, pos + 1)
        pos = _skip(text, pos)
        if text[pos:pos + 1] == "}":
            return
        if text[pos:pos + 1] != ",":
            raise ValueError("not a JSON object")
        pos = _skip(text, pos + 1)


def _resume(members: Generator[tuple[str, int], int, None], end: int) -> tuple[str, int] | None:
    """The next member of `_members`, its previous value having ended at `end`; None after the last."""
    try:
        return members.send(end)
    except StopIteration:
        return None


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _json_vocabulary(path: Path) -> tuple[list[Any], dict[str, int] | list[Any]]:
    """(``added_tokens``, ``model.vocab``) of a tokenizers JSON file, decoded up to the vocabulary only.

    SigLIP 2's Gemma ``tokenizer.json`` is 256,000 rows and some 500,000 merges (34 MB on the hub): building a
    `tokenizers.Tokenizer` from it only to count its ids and look up the pad token cost a whole second parse per
    load (0.6 s of a 17.8 MB file here), on top of the one the text tokenizer makes for the first text. The
    merges, after the vocabulary in the file, are left to that one. ValueError when the file is not shaped so; at
    most `TOKENIZER_JSON_LIMIT` bytes are read, a longer file is one `CheckpointFormatError` line."""
    text = config_bytes(path, TOKENIZER_JSON_LIMIT).decode("utf-8")
    decoder = json.JSONDecoder()
    added: Any = None
    top = _members(text, 0)
    step = next(top, None)
    while step is not None:
        key, pos = step
        if key != "model":
            value, end = decoder.raw_decode(text, pos)
            added = value if key == "added_tokens" else added
            step = _resume(top, end)
            continue
        inner = _members(text, pos)
        found = next(inner, None)
        while found is not None and found[0] != "vocab":
            found = _resume(inner, decoder.raw_decode(text, found[1])[1])
        if found is None:
            raise ValueError("its 'model' has no 'vocab'")
        vocab, _ = decoder.raw_decode(text, found[1])
        if added is None:  # after the model, unusually: read the rest (a whole parse, as before)
            added = json.loads(text).get("added_tokens")
        if not isinstance(added, list) or not isinstance(vocab, (dict, list)):
            raise ValueError("its 'added_tokens' or 'model.vocab' is not a list / object")
        return added, vocab
    raise ValueError("it has no 'model'")


def _json_token_ids(path: Path) -> tuple[int, Callable[[str], int | None]]:
    """(one past the highest id the file's tokenizer can emit, token text -> its id, added tokens first as the
    `tokenizers` library looks them up); the tokenizers library's own refusal when the file is not shaped as
    `_json_vocabulary` reads it."""
    try:
        added, vocab = _json_vocabulary(path)
        special = {str(t["content"]): int(t["id"]) for t in added}
        pieces = vocab if isinstance(vocab, dict) else {str(row[0]): i for i, row in enumerate(vocab)}
        ids = [int(i) for i in pieces.values()]
    except CheckpointFormatError:  # too large, no regular file: never handed to the tokenizers library whole
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, RecursionError):
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as err:  # noqa: BLE001 - the tokenizers library raises plain Exceptions
            raise CheckpointFormatError(f"{path} is not a tokenizers JSON file: {err}") from None
        return int(tok.get_vocab_size(with_added_tokens=True)), tok.token_to_id
    count = max([*ids, *special.values(), -1]) + 1
    return count, lambda token: special.get(token, pieces.get(token))


def _json_ids(directory: Path, config: dict[str, Any], vocab_size: int | None) -> dict[str, int]:
    """The pad id ``tokenizer_config.json`` names in the folder's ``tokenizer.json`` (its post-processor adds
    the end token itself); nothing when the file is absent (its first text names it)."""
    path = directory / "tokenizer.json"
    if not member(path):
        return {}
    try:
        import tokenizers  # noqa: F401 - the text tokenizer's package: without it the first text says so
    except ImportError:
        return {}
    count, token_to_id = _json_token_ids(path)
    _too_many(directory, "tokenizer.json", count, vocab_size)
    token = _token(config, "pad_token", None)
    if token is None or str(config.get("tokenizer_class") or "").startswith(("Siglip", "T5")):
        return {}  # none named, or the config describes a spiece.model the folder no longer has
    found = token_to_id(token)
    if found is None:
        raise CheckpointFormatError(f"{directory / _CONFIG} field 'pad_token' = {brief(token)} is not a token of "
                                    "tokenizer.json")
    return {"pad_id": int(found)}


def folder_tokenizer(directory: Path, hf_config: dict[str, Any] | None = None,
                     vocab_size: int | None = None) -> dict[str, Any]:
    """The tokenizer a transformers SigLIP folder carries, as clipforge's tokenizer config (see the module
    docstring); `vocab_size`: the text tower's token embeddings, which every id must fit. `hf_config`
    (config.json) only supplies the vocabulary when `vocab_size` is not given.

    Without a tokenizer config a folder was read with OpenAI's BPE: ids up to 49,407 into SigLIP's 32,000
    token embeddings (an IndexError, or wrong text features in a larger vocabulary)."""
    directory = Path(directory)
    if vocab_size is None:
        text = (hf_config or {}).get("text_config") or {}
        vocab_size = text.get("vocab_size") if isinstance(text.get("vocab_size"), int) else None
    config = _tokenizer_config(directory)
    if _kind(directory, config, vocab_size) == "hf-json":
        return {"kind": "hf-json", "file": "tokenizer.json", "clean": "canonicalize",
                **_json_ids(directory, config, vocab_size)}
    spec = {"kind": "sentencepiece", "file": "spiece.model", "clean": "canonicalize", "eos_id": 1, "pad_id": 1}
    if member(directory / "spiece.model"):
        spec.update(_spiece_ids(directory, config, vocab_size))
    return spec  # no file: the first text says spiece.model is missing from the folder


def folder_languages(directory: Path, vocab_size: int | None) -> list[str] | None:
    """``["en", "multilingual"]`` for SigLIP 2 (a Gemma tokenizer) and SigLIP i18n's vocabulary, as the
    registry's configs of those families record; None (English) otherwise."""
    from clipforge.models.family_configs import MULTILINGUAL

    gemma = str(_tokenizer_config(Path(directory)).get("tokenizer_class") or "").startswith("Gemma")
    if vocab_size in (GEMMA_VOCAB, I18N_VOCAB) or gemma:
        return [*MULTILINGUAL]
    return None
