"""Where a library keeps its records and vectors: `--store` parsed, and the token found.

- (no `--store`) the embedded default: SQLite + FAISS in the `--library` folder.
- ``milvus-lite:PATH`` Milvus's embedded engine in one local folder (``PATH`` ending in ``.db``;
  one process at a time: it holds a lock on it). What tests and CI use.
- ``milvus://HOST:PORT/COLLECTION`` (or ``milvus+https://``) a Milvus server or cluster. The
  token is read from ``$CLIPFORGE_MILVUS_TOKEN`` or the file named by
  ``$CLIPFORGE_MILVUS_TOKEN_FILE``, never from the command line: a spec carrying
  ``user:password@`` or ``?token=`` is refused, since command lines are visible to every user
  of the machine (``ps``) and end up in shell history.

A Milvus store's collection is its source of truth; the `--library` folder beside it only
holds what can be rebuilt (thumbnails, zero-shot caches) and uploads.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StoreSpec", "lite_bytes", "parse_store", "read_token", "store_argument"]

# Used with `fullmatch`: `match` with `$` let a name end in a newline ("abc\n" from a file read into $CLIPFORGE_STORE),
# and collections named "abc\n_spaces" were made that the same store spelled "abc" did not find.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,200}")
DEFAULT_COLLECTION = "clipforge"


@dataclass(frozen=True)
class StoreSpec:
    """A parsed `--store`: `kind` is "sqlite", "milvus-lite" or "milvus"."""

    kind: str
    uri: str = ""
    collection: str = DEFAULT_COLLECTION
    secure: bool = False

    def describe(self) -> str:
        """The store as people are shown it: for a Milvus server the `--store` text that opens it again
        (`milvus+https://` kept: a secure store was shown, and suggested to be opened, as `milvus://`), with
        its HOST:PORT and nothing else of `uri` (`_address`: messages go to logs and to a server's clients)."""
        if self.kind == "milvus-lite":
            return f"milvus-lite:{self.uri} (collection {self.collection})"
        if self.kind == "milvus":
            return f"{'milvus+https' if self.secure else 'milvus'}://{_address(self.uri)}/{self.collection}"
        return "sqlite"


_ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[\w.-]+)(?::\d+)?")  # with `fullmatch`, as `_NAME`


def _address(uri: str) -> str:
    """HOST:PORT of a server URI and nothing else: never a user, a password or a token. `parse_store` refuses
    specs carrying any, but a StoreSpec built by hand may hold one; where the URI cannot be read for certain (an
    `@` past its authority: an unescaped `/` in a password, or a token in a query), no part of it is shown."""
    rest = uri.split("://", 1)[-1]
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    address = authority.rpartition("@")[2]
    if "@" in rest[len(authority) :] or not _ADDRESS.fullmatch(address):
        return "(address withheld)"
    return address


def lite_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes a milvus-lite store takes on disk: its `PATH.db` is a folder (collections, parquet segments, write-ahead
    logs), summed file by file without following links; 0 where nothing is there yet. `index stats` reported 0
    for every Milvus store, as if the database were empty."""
    from clipforge.atomic import files_under

    root = Path(path)
    if root.is_file():
        return root.stat().st_size
    return sum(info.st_size for _, info in files_under(root))  # a segment compacted away mid-walk is skipped


def _bad(spec: str, why: str) -> ValueError:
    return ValueError(
        f"--store {_shown_spec(spec)!r}: {why} (expected milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db)"
    )


def _shown_spec(spec: str) -> str:
    """`spec` as its error repeats it: a server spec that may carry credentials (an `@`, a query, `token`) keeps
    only its scheme and HOST:PORT. The refusal of `milvus://root:secret@db:19530/c` printed the password back."""
    scheme, sep, rest = spec.partition("://")
    # a path, not `milvus-lite://root:s3cret@db:19530/c` (a server's URI under the wrong scheme: refused, not echoed)
    lite_path = spec.startswith("milvus-lite:") and not spec.startswith("milvus-lite://")
    if lite_path or not any(mark in spec.lower() for mark in ("@", "?", "token")):
        return spec
    return (
        f"{scheme}://{_address(rest)} [credentials withheld]"
        if sep
        else "[withheld: it may hold credentials]"
    )


def parse_store(spec: str | None) -> StoreSpec:
    """`--store` text -> StoreSpec; ValueError naming the rule it breaks."""
    if spec is None or spec in ("", "sqlite"):
        return StoreSpec("sqlite")
    if spec.startswith("milvus-lite:"):
        rest = spec[len("milvus-lite:") :]
        path, _, collection = rest.partition("#")
        if not path:
            raise _bad(spec, "no path after milvus-lite:")
        path = str(Path(path).expanduser().resolve())
        if not path.endswith(".db"):
            raise _bad(spec, "a milvus-lite path must end in .db")
        collection = collection or DEFAULT_COLLECTION
        if not _NAME.fullmatch(collection):
            raise _bad(
                spec, f"collection {collection!r} must be letters, digits and _ (not starting with a digit)"
            )
        return StoreSpec("milvus-lite", path, collection)
    for scheme, secure in (("milvus://", False), ("milvus+https://", True)):
        if spec.startswith(scheme):
            rest = spec[len(scheme) :]
            if "@" in rest or "token=" in rest or "?" in rest:
                raise _bad(
                    spec,
                    "credentials are never read from the command line; put the token in "
                    "$CLIPFORGE_MILVUS_TOKEN or a file named by $CLIPFORGE_MILVUS_TOKEN_FILE",
                )
            host, _, collection = rest.partition("/")
            if not host or ":" not in host or not host.rsplit(":", 1)[1].isdigit():
                raise _bad(spec, "HOST:PORT is missing")
            port = int(host.rsplit(":", 1)[1])
            if not 0 < port < 65536:  # pymilvus said only "Port out of range 0-65535", naming no flag
                raise _bad(
                    spec,
                    f"port {port} is not a TCP port (1-65535; Milvus listens on 19530 unless told otherwise)",
                )
            collection = collection.strip("/") or DEFAULT_COLLECTION
            if not _NAME.fullmatch(collection):
                raise _bad(
                    spec,
                    f"collection {collection!r} must be letters, digits and _ (not starting with a digit)",
                )
            return StoreSpec("milvus", f"{'https' if secure else 'http'}://{host}", collection, secure)
    raise _bad(spec, "unknown kind of store")


def read_token() -> str:
    """The Milvus token from the environment or the file it names ("" when neither is set)."""
    token = os.environ.get("CLIPFORGE_MILVUS_TOKEN", "")
    path = os.environ.get("CLIPFORGE_MILVUS_TOKEN_FILE")
    if token or not path:
        return token.strip()
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"cannot read $CLIPFORGE_MILVUS_TOKEN_FILE {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not text or "\n" in text:
        raise ValueError(f"$CLIPFORGE_MILVUS_TOKEN_FILE {path} must hold the token on one line")
    return text


def store_argument(spec: StoreSpec) -> str:
    """The `--store` text that opens `spec` again, for the commands a message gives (`describe()` adds the
    collection in words for milvus-lite)."""
    if spec.kind == "milvus-lite":
        return shlex.quote(f"milvus-lite:{spec.uri}" + (f"#{spec.collection}" if spec.collection != DEFAULT_COLLECTION
                                                         else ""))
    return shlex.quote(spec.describe())
