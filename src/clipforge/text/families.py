"""The tokenizer a model family needs, built from the config's ``tokenizer`` field (data).

The kinds, one call shape (`ModelTokenizer(texts) -> LongTensor[N, context_length]`):

- ``openai-bpe``: CLIP's BPE (`clipforge.text.tokenize`), truncating with the end token kept.
- ``sentencepiece``: a SentencePiece model file (SigLIP's ``spiece.model``, mT5's), through the
  ``sentencepiece`` package. Ids: the pieces of the cleaned text, cut to leave room for
  ``eos_id``, then ``eos_id``, then ``pad_id`` to the full context - what transformers'
  ``SiglipTokenizer`` gives with ``padding="max_length", truncation=True`` (open_clip's call).
- ``hf-json``: a ``tokenizers`` JSON file (SigLIP 2's Gemma tokenizer, XLM-V). The file's own
  post-processor adds its special tokens; truncation and padding to the context are the
  `tokenizers` library's, configured as transformers' fast tokenizers configure them.
- ``wordpiece``: a BERT ``vocab.txt`` read by `clipforge.text.wordpiece` (CLIPA's bert-base-uncased,
  ``[SEP]`` turned into padding with ``strip_sep``).

Cleaning before tokenizing is open_clip's: ``canonicalize`` (underscores to spaces,
punctuation removed, lower case, whitespace collapsed: SigLIP's training text) or
``whitespace`` (whitespace collapsed). Padding is part of the ids because SigLIP's text tower
is read at the last position of the full-length row: never trim SigLIP rows.
"""

from __future__ import annotations

import html
import string
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["CarriedTokenizer", "ModelTokenizer", "TokenizerUnavailableError", "build_tokenizer", "clean", "tokenize_for",
           "tokenizer_of"]

_PUNCTUATION = str.maketrans("", "", string.punctuation)


class TokenizerUnavailableError(FileNotFoundError):
    """A model's tokenizer file (or the package that reads it) is missing."""


def _basic(text: str) -> str:
    """ftfy, then HTML entities unescaped twice, stripped: OpenAI's and open_clip's first step."""
    import ftfy

    return html.unescape(html.unescape(ftfy.fix_text(text))).strip()


def clean(text: str, how: str | None) -> str:
    """open_clip's text cleaning before a SentencePiece / HF tokenizer (``canonicalize``,
    ``whitespace``, ``lower``). All start with ftfy (which also turns full-width punctuation
    such as ``：`` into ASCII, so canonicalize then removes it)."""
    if how not in ("canonicalize", "whitespace", "lower"):
        return text
    text = _basic(text)
    if how == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    text = " ".join(text.split())
    return text.lower() if how == "lower" else text


@dataclass
class ModelTokenizer:
    """A model's tokenizer: call it with texts to get the id tensor its text tower takes.

    `spec` is the config's ``tokenizer`` field; `path` the file it names (None for OpenAI's
    BPE). `pad_last`: rows are padded to the full context (SentencePiece / HF kinds), which
    towers pooled at the last position need.
    """

    spec: dict[str, Any]
    context_length: int
    path: Path | None = None
    _backend: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (DataLoader workers): the loaded backend and the lock are rebuilt on arrival."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_backend", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _backend=None, _lock=threading.Lock())

    @property
    def kind(self) -> str:
        return str(self.spec.get("kind", "openai-bpe"))

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        return self.tokenize(texts, context_length)

    def tokenize(self, texts: str | Sequence[str], context_length: int | None = None,
                 truncate: bool = True) -> torch.Tensor:
        """Ids [N, context_length] (`truncate=False` raises for over-long texts with OpenAI's BPE)."""
        import torch

        from clipforge.text.tokenizer import text_rows

        texts = text_rows(texts)
        length = int(context_length or self.context_length)
        if self.kind == "openai-bpe":
            from clipforge.text import tokenize

            return tokenize(list(texts), context_length=length, truncate=truncate)
        cleaned = [clean(t, self.spec.get("clean")) for t in texts]
        if self.kind == "hf-transformers":  # transformers' own class (`clipforge.text.hf_tokenizer`)
            from clipforge.text.hf_tokenizer import transformers_ids

            backend = self._load()
            with self._lock:  # the call sets truncation/padding state on the backend
                rows = transformers_ids(backend, cleaned, length)
            return torch.tensor(rows, dtype=torch.long).reshape(len(rows), length)
        if self.kind == "wordpiece":  # BERT's WordPiece (CLIPA: bert-base-uncased, [SEP] stripped)
            return self._wordpiece(cleaned, length)
        rows = self._sentencepiece(cleaned, length) if self.kind == "sentencepiece" else self._hf(cleaned, length)
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), length)

    def encode(self, text: str) -> list[int]:
        """The ids of one cleaned text without special tokens or padding."""
        text = clean(text, self.spec.get("clean"))
        if self.kind == "openai-bpe":
            from clipforge.text import get_tokenizer

            return get_tokenizer().encode(text)
        if self.kind == "sentencepiece":
            return list(self._load().encode(text))
        if self.kind == "hf-transformers":
            from clipforge.text.hf_tokenizer import encode_plain

            return encode_plain(self._load(), text)
        if self.kind == "wordpiece":
            return self._load().encode(text)
        return list(self._load().encode(text, add_special_tokens=False).ids)

    def pad_id(self) -> int:
        """The id rows are padded with (what a reader of exported ids needs to find where a prompt ends)."""
        if self.kind == "openai-bpe":
            return 0
        if self.kind == "sentencepiece":
            return int(self.spec.get("pad_id", 1))
        if self.spec.get("pad_id") is not None:
            return int(self.spec["pad_id"])
        backend = self._load()
        if self.kind == "hf-transformers":
            return int(backend.pad_token_id if backend.pad_token_id is not None else 0)
        return int(backend.pad_id) if self.kind == "wordpiece" else _pad_id(backend)

    def _load(self) -> Any:
        with self._lock:
            if self._backend is None:
                self._backend = _open_backend(self.kind, self.path, self.spec)
        return self._backend

    def _sentencepiece(self, texts: list[str], length: int) -> list[list[int]]:
        sp = self._load()
        eos, pad = self.spec.get("eos_id", 1), self.spec.get("pad_id", 1)
        add_eos = self.spec.get("add_eos", True)
        room = length - (1 if add_eos else 0)
        rows = []
        for ids in sp.encode(texts):
            ids = list(ids)[:room] + ([eos] if add_eos else [])
            rows.append(ids + [pad] * (length - len(ids)))
        return rows

    def _wordpiece(self, texts: list[str], length: int) -> torch.Tensor:
        """``[CLS] pieces [SEP]`` padded with ``[PAD]``, truncated to the context keeping ``[SEP]`` (transformers'
        ``BertTokenizer`` with ``padding="max_length", truncation=True``); ``strip_sep``: every ``[SEP]`` id then
        becomes the pad id (open_clip's ``strip_sep_token``, which CLIPA was trained with). One known difference:
        special-token text a user types ("[SEP]") is split like any other text here (`clipforge.text.wordpiece`),
        where transformers maps it to the special id."""
        backend = self._load()
        rows = backend(texts, context_length=length, truncate=True)
        if self.spec.get("strip_sep"):
            rows[rows == backend.sep_id] = backend.pad_id
        return rows

    def _hf(self, texts: list[str], length: int) -> list[list[int]]:
        from tokenizers import Tokenizer

        base: Tokenizer = self._load()
        with self._lock:  # truncation/padding are per-tokenizer state: set them for this call
            base.enable_truncation(max_length=length, strategy="longest_first", direction="right")
            pad_id = self.spec.get("pad_id")
            if pad_id is None:
                pad_id = _pad_id(base)
            base.enable_padding(length=length, pad_id=pad_id, pad_token=base.id_to_token(pad_id) or "<pad>")
            encoded = base.encode_batch(texts, add_special_tokens=True)
        return [list(e.ids) for e in encoded]


def _pad_id(tok: Any) -> int:
    for name in ("<pad>", "[PAD]", "</s>"):
        found = tok.token_to_id(name)
        if found is not None:
            return int(found)
    return 0


def _open_backend(kind: str, path: Path | None, spec: dict[str, Any] | None = None) -> Any:
    if path is None or not Path(path).is_file():
        raise TokenizerUnavailableError(f"tokenizer file {path} not found")
    if kind == "hf-transformers":
        from clipforge.text.hf_tokenizer import open_transformers_tokenizer

        return open_transformers_tokenizer(dict(spec or {}), Path(path), TokenizerUnavailableError)
    if kind == "wordpiece":  # transformers' BertTokenizer reads words of up to 100 characters (cn_clip's: 200)
        from clipforge.text.wordpiece import WordPieceTokenizer

        return WordPieceTokenizer(path, lower_case=bool((spec or {}).get("lower", True)), max_input_chars_per_word=100)
    if kind == "sentencepiece":
        try:
            import sentencepiece as spm
        except ImportError:
            raise TokenizerUnavailableError(
                "this model's tokenizer needs the sentencepiece package: pip install 'clipforge[families]'") from None
        return spm.SentencePieceProcessor(model_file=str(path))
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exceptions
        raise TokenizerUnavailableError(f"{path}: not a tokenizers JSON file ({exc})") from None


def build_tokenizer(spec: dict[str, Any] | None, context_length: int,
                    search: Sequence[str | Path] = ()) -> ModelTokenizer:
    """The tokenizer `spec` describes, its file looked for in `search` (folders, in order).

    A missing file is not an error here (random weights have none); the first call says which
    file is missing and where it was looked for.
    """
    spec = dict(spec or {"kind": "openai-bpe"})
    if spec.get("kind", "openai-bpe") == "openai-bpe":
        return ModelTokenizer(spec, context_length)
    name = str(spec["file"])
    folders = [Path(p) for p in search if p]
    found = next((f / name for f in folders if (f / name).is_file()), None)
    if found is None:
        return _MissingTokenizer(spec, context_length, None, folders=folders)
    return ModelTokenizer(spec, context_length, found)


@dataclass
class _MissingTokenizer(ModelTokenizer):
    folders: list[Path] = field(default_factory=list)

    def _load(self) -> Any:
        repo = self.spec.get("hub_repo")
        hint = f" (it comes with the weights from {repo})" if repo else ""
        file = f"this model's {self.kind} tokenizer file {self.spec['file']!r}"
        if not self.folders:  # random weights, or a model built in memory: no folder was ever looked in
            raise TokenizerUnavailableError(
                f"{file} is needed and this model has no checkpoint folder to hold it{hint}; load the model from a "
                "checkpoint with the file beside it")
        where = ", ".join(str(f) for f in self.folders)
        raise TokenizerUnavailableError(
            f"{file} was not found in {where}{hint}; put it beside the checkpoint")


class CarriedTokenizer:
    """A tokenizer object a model carries (``tokenizer(texts, context_length=, truncate=)``), called
    like a `ModelTokenizer`: long texts truncated, the model's own context by default."""

    def __init__(self, tokenizer: Any, context_length: int) -> None:
        self.tokenizer, self.context_length = tokenizer, context_length

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        return self.tokenizer(texts, context_length=int(context_length or self.context_length), truncate=True)

    def __getattr__(self, name: str) -> Any:
        """The carried tokenizer's other attributes (WordPiece's `unknown_fraction`): `classify` and `similarity` never
        gave Chinese-CLIP's [UNK] notice without them (audit 63). Not its own field or dunders (copy, pickle)."""
        if name == "tokenizer" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.tokenizer, name)


def tokenizer_of(model: Any, search: Sequence[str | Path] = ()) -> ModelTokenizer:
    """The tokenizer a model's config names (``model.tokenizer_cfg``; none: OpenAI's BPE), its
    file looked for in `search` and in the folders the loader recorded (``model.tokenizer_dirs``:
    the checkpoint's folder, the download cache's tokenizer folder). Kept on the model after the
    first call."""
    cached = getattr(model, "__dict__", {}).get("_cf_tokenizer")
    if cached is not None and not search:
        return cached
    own = getattr(model, "tokenizer", None)  # a model that carries its tokenizer (Chinese-CLIP's WordPiece)
    if own is not None and callable(own) and not isinstance(own, ModelTokenizer):
        return CarriedTokenizer(own, int(getattr(model, "context_length", 52)))
    spec = getattr(model, "tokenizer_cfg", None)
    folders: list[str | Path] = [*search, *getattr(model, "tokenizer_dirs", ())]
    tokenizer = build_tokenizer(spec, int(getattr(model, "context_length", 77)), folders)
    if not search and hasattr(model, "__dict__"):
        model.__dict__["_cf_tokenizer"] = tokenizer
    return tokenizer


def tokenize_for(model: Any, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
    """Texts -> the ids `model`'s text tower takes, with `model`'s own tokenizer (long texts
    truncated). Tasks call this instead of `clipforge.text.tokenize`, which is OpenAI's BPE only."""
    return tokenizer_of(model)(texts, context_length)
