"""`MilvusLibrary`'s removals: forgetting photos by id, path or folder (`remove`) and files gone from disk (`prune`).

A file may be stored in any model space (`index add --model M` fills a second one), so both look in every
space and delete from every space, as the embedded store's one images table holds every file of every
model. `remove` reads only the rows asked about (ids in chunks, exact paths, a folder's ``path like
"dir/%"``), `prune` every stored path; neither loads the model. A part of `MilvusLibrary` (`clipforge.library.milvus_library`), whose `__init__` sets the
attributes these methods read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from clipforge.library.file_names import display_path
from clipforge.library.milvus_expr import under_expr
from clipforge.library.milvus_store import MilvusSpace
from clipforge.library.scan import normalise_path


class MilvusRemoval:
    """The remove and prune methods of `MilvusLibrary` (see the module docstring)."""

    def remove(
        self,
        items: int | str | os.PathLike[str] | Iterable[int | str | os.PathLike[str]],
        missing_ok: bool = True,
    ) -> int:
        """Forget images by id, file path or folder, in every model space; files are not touched.

        Reads only the rows asked about (ids, exact paths, a folder's ``path like "dir/%"``), not the
        whole collection."""
        if isinstance(items, (int, np.integer, str, os.PathLike)):
            items = [items]
        items = list(items)
        spaces = self._every_space()  # a file may be stored in a second space only (`index add --model M`)
        ids = sorted({int(i) for i in items if isinstance(i, (int, np.integer))})
        by_id: dict[int, str] = {}
        names = [normalise_path(i) for i in items if not isinstance(i, (int, np.integer))]
        exact: set[str] = set()
        for space in spaces:
            for start in range(0, len(ids), 512):
                chunk = ", ".join(str(i) for i in ids[start : start + 512])
                by_id |= {int(r["id"]): r["path"] for r in space.query(f"id in [{chunk}]", ["path", "id"])}
            exact |= set(space.rows_for_paths(names, ["path"]))
        gone: set[str] = set()
        unknown: list[str] = []
        for item in items:
            if isinstance(item, (int, np.integer)):
                (gone.add(by_id[int(item)]) if int(item) in by_id else unknown.append(f"id {int(item)}"))
                continue
            path = normalise_path(item)
            if path in exact:
                gone.add(path)
                continue
            under = set().union(*(self._under(space, path.rstrip(os.sep) + os.sep) for space in spaces))
            if not under:
                unknown.append(display_path(path))  # a line for people: \xNN escapes
            gone |= under
        if unknown and not missing_ok:
            raise ValueError(
                f"{self.spec.describe()} has no image with {', '.join(unknown)} (nothing removed; "
                "`clipforge index list` shows each file's id)"
            )
        return self._delete(sorted(gone))

    def _every_space(self) -> list[MilvusSpace]:
        """Every model space, loaded for reading: what `remove` and `prune` look in (as the embedded store's
        one images table holds every file of every model); the model itself is never loaded."""
        spaces = self.milvus.spaces()
        for space in spaces:
            self.milvus.space(space.fingerprint)
        return spaces

    @staticmethod
    def _under(space: MilvusSpace, prefix: str) -> set[str]:
        """Paths stored under the folder `prefix` (ending in a separator).

        A prefix match (`milvus_expr.under_expr`: ``path like "prefix%"`` and the ``b64:`` keys of names
        below it that are not UTF-8), filtered here by the exact prefix: milvus-lite reads ``_`` in a pattern
        as a wildcard (more rows, filtered out), a 2.3 server refuses ``%`` inside one and the engines escape
        ``\\`` differently, so a prefix holding ``%`` or ``\\`` reads every path instead."""
        if "%" in prefix or "\\" in prefix:
            rows = space.iter_rows(fields=["path"])
        else:
            rows = space.query(under_expr(prefix), ["path"])
        return {r["path"] for r in rows if r["path"].startswith(prefix)}

    def prune(self) -> int:
        """Forget files that no longer exist, whichever model spaces hold them. An upload whose copy is in this
        library folder's ``uploads/`` is not gone (the folder was moved: `uploads.home_path`)."""
        from clipforge.library.uploads import home_path

        stored = {r["path"]: r.get("sha256") for space in self._every_space()
                  for r in space.iter_rows(fields=["path", "sha256"])}
        # gone: no file, and no copy here that another row holds already (that copy is that row's)
        return self._delete(sorted(p for p, sha in stored.items()
                                   if not os.path.exists(p) and (home_path(self.paths, p, sha) or p) in stored))

    def _delete(self, paths: list[str]) -> int:
        with self._lock:
            self._listings.clear()
            for space in self.milvus.spaces():
                self.milvus.space(space.fingerprint)
                space.delete_paths(paths)
        return len(paths)
