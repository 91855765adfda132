"""A model family's tokenizer files carried beside the weights a run writes.

A SigLIP, MetaCLIP 2 or transformers-tower model reads its tokenizer from a file beside its checkpoint
(or the download cache it came from). Weights written elsewhere without that file load on this machine
through the cache and fail on the next one. So what `train` and `wise-ft` write gets the file next
to it: the result loads as the same family wherever it is copied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["carry_tokenizer_file"]


def carry_tokenizer_file(tokenizer: Any, folder: Path) -> list[Path]:
    """Copy `tokenizer`'s file (and its ``extra_files``) into `folder`; returns the files written.

    Nothing for OpenAI's BPE and Chinese-CLIP's WordPiece (they ship with clipforge). A file already
    there with the same bytes is left alone; one with other bytes is an error naming both files.
    """
    from clipforge.atomic import write_bytes_atomic
    from clipforge.text.families import ModelTokenizer

    source = getattr(tokenizer, "path", None) if isinstance(tokenizer, ModelTokenizer) else None
    if source is None or not Path(source).is_file():
        return []
    source = Path(source)
    extra = [source.parent / str(name) for name in (tokenizer.spec.get("extra_files") or ())]
    written = []
    for file in [source, *(f for f in extra if f.is_file())]:
        target = folder / file.name
        if target.exists() and target.stat().st_size == file.stat().st_size and target.read_bytes() == file.read_bytes():
            continue
        if target.exists():
            raise ValueError(f"{target} exists and is not the model's tokenizer file ({file}); write to another folder")
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, file.read_bytes())
        written.append(target)
    return written
