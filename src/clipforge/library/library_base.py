"""What every part of a `Library` stands on: its folder, its database and the model it is built with.

Opening checks the folder, refuses a library whose database was lost beside its derived files
(an index, thumbnails, uploads), and opens the store. The model is loaded on first use
(`encoder`) and must be the library's own or one with a model space here (`spaces`): a library
built with one model never takes vectors from another (`ModelMismatchError`). `record_model`
writes the model's identity into the database, once.

The rest of `Library` is built on `LibraryBase`: `library_writes` (add, remove, prune, tag,
rebuild the index), `library_reads` (search, images, thumbnails, tags) and `library` (dropping
a model space, statistics, lifetime).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from clipforge.errors import UserError
from clipforge.library.dbfile import damaged
from clipforge.library.encoder import Encoder, default_model_name, resolve_encoder
from clipforge.library.index_manager import IndexManager
from clipforge.library.paths import LibraryPaths
from clipforge.library.settings import check_max_pixels
from clipforge.library.store import Store
from clipforge.library.tagging import count_noun, tags_on_add
from clipforge.library.transaction import META_DIM, META_DTYPE, META_FINGERPRINT, META_NAME
from clipforge.library.uploads import rehome_uploads
from clipforge.library.vector_index import IndexSpec

__all__ = [
    "META_DIM",
    "META_DTYPE",
    "META_FINGERPRINT",
    "META_NAME",
    "LibraryBase",
    "ModelMismatchError",
    "loaded_fingerprint",
    "names_space",
    "other_build_refusal",
    "unsearchable_default",
    "pick_space",
    "record_model",
    "refuse_unsearchable_default",
    "space_labels",
]


class ModelMismatchError(UserError, ValueError):
    """The library's vectors come from a different model than the one offered."""


class LibraryBase:
    """A library's folder, store and model; `Library` (in `clipforge.library.library`) is what users open."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        model: Any = None,
        *,
        preprocess: Any = None,
        device: str | None = None,
        index: str | IndexSpec | None = None,
        max_pixels: int | None = None,
        vector_dtype: str = "float32",
        create: bool = True,
        precision: str = "fp32",
        draft: bool = True,
        new_space: bool = False,
        towers: Sequence[str] | None = None,
    ) -> None:
        # Every keyword is checked before anything is made on disk: a refused call leaves no library behind
        # (`Library(path, vector_dtype="float64")` raised after creating an empty library.sqlite3).
        if path is not None and not isinstance(path, (str, os.PathLike)):  # pathlib's "expected str, bytes or ..."
            raise TypeError(f"path must be a library folder (a str or os.PathLike) or None, got {type(path).__name__}")
        check_max_pixels(max_pixels or None)  # 0 or None: the default limit
        if vector_dtype not in ("float32", "float16"):
            raise ValueError(f"vector_dtype must be 'float32' or 'float16', got {vector_dtype!r}")
        pending_spec = IndexSpec(kind=index) if isinstance(index, str) else index  # an unknown kind: ValueError
        if pending_spec is not None and not isinstance(pending_spec, IndexSpec):
            raise TypeError(f"index must be a kind ('flat', 'ivf', 'hnsw', 'auto') or an IndexSpec, got "
                            f"{type(index).__name__}")
        from clipforge.inference.precision import resolve_precision

        resolve_precision(precision)
        self.paths = LibraryPaths(path)
        self.paths.check_folder()
        self._refuse_lost_database()
        made = self.paths.new_library() if create else None  # what a refused model must not leave behind
        if create:
            self.paths.ensure()
        self.store = Store(self.paths.db, create=create)
        from clipforge.image import DEFAULT_MAX_PIXELS

        # None would mean "no cap" to load_image; a library always keeps the bomb guard.
        self.max_pixels = int(max_pixels) if max_pixels else DEFAULT_MAX_PIXELS
        self._vector_dtype = vector_dtype
        self._device = device
        # How the one files-to-embeddings path runs (`--precision`, `--exact-decode`); the library's
        # identity is the model's fp32 fingerprint, so a bf16 run adds to the same library.
        self._precision, self._draft = precision, draft
        # ("text",): a text search loads the text tower only (`api.load_model`); ("image",): an add reads
        # the image tower only, unless it will tag its new photos, which needs the text tower too.
        if towers is not None and "text" not in towers and tags_on_add(self.store):
            towers = None
        self._towers = towers
        self._encoder: Encoder | None = None
        self._manager: IndexManager | None = None
        self._init_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._pending_spec = pending_spec
        self.last_tagged = 0  # photos the last add tagged with the library's vocabulary
        self.last_filled = 0  # photos held already that the last add embedded into this model's space
        self._new_space = new_space  # a model without vectors here may start its own model space
        try:
            # a library moved, renamed or copied: its uploads' records follow it (`clipforge.library.uploads`)
            rehome_uploads(self.store, self.paths)
            if model is not None:
                self._set_encoder(
                    resolve_encoder(
                        model, preprocess, device, precision=precision, draft=draft, towers=self._towers
                    )
                )
                if create:
                    self._claim_model()
        except BaseException:
            if made is not None:  # a mistyped --model must not leave an empty library behind
                self.store.close()
                made.discard()
            raise

    def _claim_model(self) -> None:
        """A library opened to be written with an explicit model (`Library(path, model=M)`, `serve --create
        --model M`) that records no model yet records M now: a later writer without a model (`index add DIR` in
        another process) used the shipped default and made it the library's model, beside a server that searched
        M's space and found nothing. (A recorded model that holds no vector is still replaced by the first
        vectors of another, `Transaction.record_model`: an explicit `index add --model N` on the empty library.)
        A library this user cannot write records nothing (nobody can add to it)."""
        from clipforge.library.dbfile import LibraryWriteError

        encoder = self._encoder
        if encoder is None or self.store.get_meta(META_FINGERPRINT) is not None or self.store.read_only:
            return
        with contextlib.suppress(LibraryWriteError):
            record_model(self.store, encoder.fingerprint, encoder.name or "", encoder.embed_dim, self._vector_dtype)

    def _refuse_lost_database(self) -> None:
        """An emptied or vanished database beside an index, thumbnails or uploads is a damaged library,
        not a new one: starting afresh would silently "rebuild" the index from nothing."""
        db = self.paths.db
        lost = (
            "missing" if not os.path.lexists(db) else ("empty (0 bytes)" if db.stat().st_size == 0 else None)
        )
        if lost is None:
            return
        derived = self.paths.derived_files()
        if derived:
            raise damaged(
                db,
                f"the file is {lost} but the library folder still holds "
                f"{derived[0].relative_to(self.paths.root)}",
            )

    # -- model ------------------------------------------------------------------------------
    @property
    def model_fingerprint(self) -> str | None:
        return self.store.get_meta(META_FINGERPRINT)

    @property
    def space_fingerprint(self) -> str | None:
        """The model space this library reads: its model's once one is loaded (`--model` naming a second space),
        else the default space (the first model's). Tags, stats and the empty-result sentence read this one,
        as search does; they read the default space's before, beside a second space's hits."""
        return self._encoder.fingerprint if self._encoder is not None else self.model_fingerprint

    def _set_encoder(self, encoder: Encoder) -> None:
        recorded = self.model_fingerprint
        if (
            recorded is not None
            and recorded != encoder.fingerprint
            and not self._new_space
            and encoder.fingerprint not in {s["fingerprint"] for s in self.spaces()}
        ):
            name = self.store.get_meta(META_NAME) or "an unnamed model"
            if name == encoder.name:  # one name, two builds: "built with X, but the model offered is X" said nothing
                raise ModelMismatchError(other_build_refusal(
                    f"library {self.paths.root}", name, recorded, encoder.fingerprint,
                    int(self.store.status_counts().get("ok") or 0),
                    f"--library {shlex.quote(str(self.paths.root))}"))
            raise ModelMismatchError(
                f"library {self.paths.root} was built with {name} (fingerprint {recorded[:12]}), but the model "
                f"offered is {encoder.describe()}. Vectors of different models cannot be searched together: "
                f"open it with its own model (omit --model), fill a model space for this one (`clipforge index add "
                f"--model {encoder.name or 'M'}`), or use another --library folder for this model."
            )
        self._encoder = encoder
        if self._manager is None or self._manager.fingerprint != encoder.fingerprint:
            self._manager = IndexManager(self.store, self.paths, encoder.fingerprint, encoder.embed_dim)
            if (
                self._pending_spec is not None
                and self._pending_spec.to_dict() != self._manager.spec().to_dict()
            ):
                self._manager.set_spec(self._pending_spec)

    @property
    def encoder(self) -> Encoder:
        """The library's model, loaded on first use."""
        if self._encoder is None:
            with self._init_lock:
                if self._encoder is None:
                    name = self.store.get_meta(META_NAME)
                    if name is not None and not isinstance(name, str):  # a blob: "got bytes" was a TypeError
                        raise damaged(
                            self.store.path,
                            f"its meta key {META_NAME!r} holds {name!r:.40}, not a model name",
                        )
                    if self.model_fingerprint is not None and not name:
                        raise ModelMismatchError(
                            f"library {self.paths.root} was built with a model passed as an object; pass the same "
                            f"model again (fingerprint {self.model_fingerprint[:12]})"
                        )
                    self._set_encoder(
                        resolve_encoder(
                            name or default_model_name(),
                            device=self._device,
                            precision=self._precision,
                            draft=self._draft,
                            towers=self._towers,
                        )
                    )
        assert self._encoder is not None
        return self._encoder

    @property
    def index_manager(self) -> IndexManager:
        self.encoder  # noqa: B018  (creates the manager)
        assert self._manager is not None
        return self._manager

    def spaces(self) -> list[dict[str, Any]]:
        """Each model space (a model with vectors here): name, fingerprint, dim, vectors, default or not."""
        default = self.model_fingerprint
        return [
            {
                "name": name,
                "fingerprint": fingerprint,
                "embed_dim": dim,
                "images": vectors,
                "default": fingerprint == default,
            }
            for fingerprint, name, dim, vectors in self.store.model_spaces()
        ]


def names_space(given: str, name: str | None, fingerprint: str) -> bool:
    """Whether `given` (a `--space`/`drop-space` argument) names a model space: its model's name, its fingerprint,
    or a fingerprint prefix of 6 or more characters (as `index stats` lists them). The one rule of every store."""
    return given in (name, fingerprint) or (len(given) >= 6 and fingerprint.startswith(given))


def space_labels(spaces: Iterable[tuple[str | None, str]]) -> str:
    """Model spaces, given as (name, fingerprint), as a refusal lists them: each by its name, and by
    `name (fingerprint12)` when two share the name (two builds of one model: "spaces: clipforge-tiny,
    clipforge-tiny" named nothing a user could type), an unnamed one (a model passed as an object) by its
    fingerprint."""
    pairs = [(name or None, fingerprint) for name, fingerprint in spaces]
    seen = Counter(name for name, _ in pairs)
    return ", ".join(
        fingerprint[:12] if not name else f"{name} ({fingerprint[:12]})" if seen[name] > 1 else name
        for name, fingerprint in pairs
    )


def pick_space(given: str, spaces: Sequence[dict[str, Any]], where: str) -> dict[str, Any]:
    """The one model space of `spaces` (as `spaces()` lists them) that `given` names (`names_space`): what
    `drop-space` and `set-default` act on. ValueError listing the spaces when none or several match."""
    match = [s for s in spaces if names_space(given, s["name"], s["fingerprint"])]
    if len(match) == 1:
        return match[0]
    labels = space_labels((s["name"], s["fingerprint"]) for s in spaces)
    if not match:
        raise ValueError(f"{where} has no single model space {given!r} (spaces: {labels})")
    raise ValueError(f"{where} has no single model space {given!r}: it names {len(match)} of them (spaces: "
                     f"{labels}); name one by its fingerprint")


def other_build_refusal(where: str, name: str, old: str, new: str, photos: int | None, target: str) -> str:
    """The refusal of a library built with another build of the model offered under the same name: the shipped
    clipforge-tiny's preprocessing changed after the first release, and its libraries were refused with "built
    with clipforge-tiny (fingerprint f724...), but the model offered is clipforge-tiny (fingerprint 0a99...)".
    It says what happened and the three commands that move the library to the build offered (`target`: the
    `--library L` or `--store S` arguments that name it)."""
    held = f"its {count_noun(photos, 'photo')}" if photos is not None else "its photos"
    return (
        f"{where} was built with an older build of {name} (fingerprint {old[:12]}) than the {name} offered now "
        f"(fingerprint {new[:12]}): its weights or preprocessing changed since, and vectors of two builds cannot be "
        f"searched together. To move the library to this build, re-embed {held} as a new model space: `clipforge "
        f"index add {target} --model {shlex.quote(name)}`, then `clipforge index set-default {target} {new[:12]}` "
        f"and `clipforge index drop-space {target} {old[:12]}`"
    )


def loaded_fingerprint(name: str, loaded: Encoder | None, device: str | None, seen: dict[str, str]) -> str:
    """The fingerprint the model name `name` loads now: what a library opened without a model loads for its default
    space (`LibraryBase.encoder`, `MilvusLibrary.encoder`), the `encoder.fingerprint` that `other_build_refusal` is
    given. Free when the library has that name's model loaded (`loaded`) or `seen` has it; else the name is loaded
    once through `resolve_encoder`, text tower only (`towers=("text",)`: where the weights file's fingerprint is
    cached, as after any earlier full load of it, the image tower is not read; otherwise the whole model is), which
    is what the next plain `search` of the library loads anyway."""
    if name not in seen:
        if loaded is not None and loaded.name == name:
            seen[name] = loaded.fingerprint
        else:
            seen[name] = resolve_encoder(name, device=device, towers=("text",)).fingerprint
    return seen[name]


def unsearchable_default(space: dict[str, Any], spaces: Sequence[dict[str, Any]], current: str, where: str,
                         target: str) -> str | None:
    """Why `space` (as `spaces()` lists it) cannot be made the default when its model's name now loads the build
    `current`, or None when it loads this space's own: a library opened without a model loads the default's name and
    reads the space of the fingerprint it gets (any space here), so plain `search` and `tag` would use `current`'s
    space while `index stats` and `tag --list` read this one (`set-default` back to an older build of clipforge-tiny,
    audit review60 1). What to do depends on whether the current build has a space here (`target`: the `--library L`
    or `--store S` arguments)."""
    name, fingerprint = space["name"], space["fingerprint"]
    if not name or current == fingerprint:
        return None
    mine = next((s for s in spaces if s["fingerprint"] == current), None)
    drop = f"forget this one with `clipforge index drop-space {target} {fingerprint[:12]}`"
    if mine is None:
        todo = (f"re-embed with the current build (`clipforge index add {target} --model {shlex.quote(name)}`), make "
                f"its space the default (`clipforge index set-default {target} {current[:12]}`) and {drop}")
    elif mine["default"]:
        todo = f"the current build's space ({current[:12]}) is the default: keep it, and {drop}"
    else:
        todo = (f"make the current build's space the default instead (`clipforge index set-default {target} "
                f"{current[:12]}`), then {drop}")
    return (f"{where}: model space {name} ({fingerprint[:12]}) cannot be the default: {name} now loads another build "
            f"(fingerprint {current[:12]}), so plain `search` and `tag` would not read this space; {todo}")


def refuse_unsearchable_default(space: dict[str, Any], spaces: Sequence[dict[str, Any]], loaded: Encoder | None,
                                device: str | None, seen: dict[str, str], where: str, target: str) -> None:
    """`set_default`'s check of both stores: ModelMismatchError (`unsearchable_default`) when `space`, not the default
    yet, has a model name that now loads another build (`loaded_fingerprint`, which loads it unless `loaded` or
    `seen` knows it). A space of a model passed as an object (no name) is not checked: it has no name to load."""
    if space["name"] and not space["default"]:
        current = loaded_fingerprint(space["name"], loaded, device, seen)
        if (refusal := unsearchable_default(space, spaces, current, where, target)) is not None:
            raise ModelMismatchError(refusal)


def record_model(store: Store, fingerprint: str, name: str, embed_dim: int, vector_dtype: str) -> None:
    """Record a library's model (its default space) once: what `index copy` (`clipforge.library.transfer`) does with
    the source's model, no model loaded. An add records its model with its first vectors, in their transaction
    (`Transaction.record_model`, from `indexer.StoreWriter`)."""
    if store.get_meta(META_FINGERPRINT) is None:
        with store.transaction() as tx:
            tx.record_model(fingerprint, name, embed_dim, vector_dtype)
