"""The download trust policy: which sha256 pins a file, the opt-in for files without one, the record of acceptance.

- A file is trusted when its sha256 equals a full 64-digit hash pinned in the registry (OpenAI's
  URLs carry theirs). An 8-digit prefix (open_clip's release file names) or a hash the server
  announces (a Hugging Face hub's ``X-Linked-Etag``) is not a pin: `HF_ENDPOINT` may point at any
  mirror, and a prefix is cheap to collide. Such files are refused before any byte is fetched,
  unless the user opts in with ``CLIPFORGE_ALLOW_UNPINNED=1`` (or `allow_unpinned=True`); then the
  prefix and announced hash are still checked, `verify` (the registry passes a check of every
  tensor's shape against the named architecture) must accept the file, and a ``<file>.sha256``
  record beside it lets later runs re-check the cached copy cheaply.

Owns the words of that policy (`is_full_sha256`, `unpinned_reason`, `allow_unpinned_from_env`), how a hash
is compared with a full digest or a published prefix (`_matches`) and the ``<file>.sha256`` record
(`_record`, `_write_record`). `clipforge.weights.download` applies it.
"""

from __future__ import annotations

import os
from pathlib import Path

ALLOW_UNPINNED_ENV = "CLIPFORGE_ALLOW_UNPINNED"


def allow_unpinned_from_env() -> bool:
    """Whether the user opted in to files without a full pinned sha256 (``CLIPFORGE_ALLOW_UNPINNED=1``)."""
    return os.environ.get(ALLOW_UNPINNED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def is_full_sha256(value: str | None) -> bool:
    return value is not None and len(value) == 64 and all(c in "0123456789abcdef" for c in value.lower())


def unpinned_reason(url: str, expected: str | None) -> str:
    """Why a file without a full pinned hash is refused, naming the opt-in."""
    what = f"only the {len(expected)}-digit sha256 prefix {expected}" if expected else "no sha256"
    return (
        f"clipforge has {what} pinned for {url}, so a mirror or proxy could swap the file; set "
        f"{ALLOW_UNPINNED_ENV}=1 to accept it after its tensor shapes are checked"
    )


def _matches(got: str, expected: str) -> bool:
    """Full digests compare equal; a published prefix (open_clip's release files carry 8 hex
    digits) must start the digest."""
    return got == expected if len(expected) == 64 else got.startswith(expected)


def _record(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _write_record(dest: Path, digest: str) -> None:
    from clipforge.atomic import write_text_atomic

    write_text_atomic(_record(dest), digest + "\n")
