"""`clipforge index stats|drop-space|set-default|copy|rebuild`: look after a library (its counts, its model spaces, moving it
to another store, its vector index)."""

from __future__ import annotations

import argparse
from typing import Any

from clipforge.cli.common import json_text, one_line
from clipforge.cli.library_args import count_noun, fail, open_library, user_errors

__all__ = ["rebuild_sentence", "run_copy", "run_drop_space", "run_rebuild", "run_set_default", "run_stats"]


def run_stats(args: argparse.Namespace) -> int:
    try:
        with open_library(args, create=False) as library:
            stats = library.stats(verify=True)
            from clipforge.library.library import same_file_names

            stats["same_file_names"] = same_file_names(library)  # files counted already (links); null: cannot tell
    except user_errors() as exc:
        return fail(exc)
    if args.json:
        print(json_text(stats))
        return 0
    images = stats["images"]
    print(f"library   {stats['library']}")
    names = int(stats.get("same_file_names") or 0)  # one file indexed under two names is one photo, not two
    second = (f" (+{names} second {'name' if names == 1 else 'names'} of these files, reached through a link: not "
              "copies)") if names else ""
    print(f"images    {images['ok'] - names} indexed{second}, {images['failed']} failed, "
          f"{stats['distinct_contents']} distinct by content")
    if stats["model"]:
        print(f"model     {stats['model']['name'] or '(object)'} fingerprint {stats['model']['fingerprint'][:12]} "
              f"dim {stats['model']['embed_dim']} {stats['model']['vector_dtype']}")
        index = stats["index"]
        state = index_state(index)
        recall = f", recall@{index.get('recall_k')} {index['recall_at_k']}" if index.get("recall_at_k") else ""
        print(f"index     {index.get('kind') or index['requested']} {state}{recall}")
    if stats.get("missing_vectors"):
        n = stats["missing_vectors"]
        print(f"vectors   {count_noun(n, 'indexed image')} {'has' if n == 1 else 'have'} no vector (it cannot be found "
              "by search): run `clipforge index add` (any path) to embed " + ("it" if n == 1 else "them"))
    for space in stats.get("spaces") or []:
        print(f"space     {space['name'] or '(object)'} fingerprint {space['fingerprint'][:12]} dim {space['embed_dim']}"
              f" {count_noun(space['images'], 'vector')}" + (" (default)" if space.get("default") else ""))
    if stats.get("tags"):
        print("tags      " + ", ".join(f"{k} {v}" for k, v in list(stats["tags"].items())[:15]))
    if stats["db_bytes"] is None:  # a Milvus server's size is its own monitoring's to tell
        print("database  on the Milvus server")
    else:
        print(f"database  {stats['db_bytes'] / 1e6:.1f} MB")
    from clipforge.library.dbfile import display_path, text_path

    for failure in stats["failures"]:  # JSON names (b64: for a name that is not UTF-8), shown with \\xNN escapes
        print(f"  failed: {one_line(display_path(text_path(failure['path'])))}: {failure['reason']}")
    return 0


def index_state(index: dict[str, Any]) -> str:
    """The saved index's state in words, by what the next search does with it (`IndexManager.status`)."""
    if index.get("fresh"):
        return "fresh"
    if not index.get("exists"):
        return "not built yet"
    following = index.get("next_search")
    if following == "check_file" or (following is None and not index.get("file_unchanged", True)):
        return "file changed since it was saved (checked, and rebuilt if damaged, on next search)"
    newer = f"{count_noun(int(index.get('newer_vectors') or 0), 'vector')} newer than the saved index"
    if following == "extend_in_memory":  # under the size a search saves at: added again by every process
        return f"{newer} (added in memory at each search; `index rebuild` saves it)"
    if following == "extend_and_save":
        return f"{newer} (added and saved by the next search)"
    return "stale (rebuilt on next search)"


def run_drop_space(args: argparse.Namespace) -> int:
    try:
        with open_library(args, create=False) as library:
            dropped = library.drop_space(args.space)
    except user_errors() as exc:
        return fail(exc)
    print(f"dropped model space {dropped['name'] or '(object)'} ({dropped['fingerprint'][:12]}): "
          f"{count_noun(dropped['images'], 'vector')}")
    return 0


def run_set_default(args: argparse.Namespace) -> int:
    """Make another model space the default: the way out of a library built with an older build of its model,
    whose default space could never be dropped."""
    try:
        with open_library(args, create=False) as library:
            space = library.set_default(args.space)
    except user_errors() as exc:
        return fail(exc)
    label = f"{space['name'] or '(object)'} ({space['fingerprint'][:12]})"
    if space["default"]:
        print(f"model space {label} is the default already")
        return 0
    print(f"model space {label} is the default now: plain `search`, `tag` and `index stats` use it (a server still "
          "open on this library must be restarted)")
    return 0


def run_copy(args: argparse.Namespace) -> int:
    try:
        from clipforge.library.transfer import copy_library

        report = copy_library(args.store, args.library, to=args.to, to_library=args.to_library, space=args.space,
                              batch_size=args.batch_size, progress=not (args.quiet or args.json))
    except user_errors() as exc:
        return fail(exc)
    print(json_text(report.to_dict()) if args.json else report.summary_line())
    return 0


def rebuild_sentence(info: dict[str, Any]) -> str:
    """What `index rebuild` built, in one sentence (the JSON is behind --json)."""
    vectors = count_noun(int(info["count"]), "vector")
    if info.get("kept_flat_because"):
        return (f"kept an exact flat index of {vectors} instead of {info.get('requested_kind')}: "
                f"{info['kept_flat_because']}; {info.get('requested_kind')} is remembered for later rebuilds")
    line = f"rebuilt the {info['kind']} index of {vectors} in {info.get('build_seconds', 0):.1f}s"
    knob = {k: v for k, v in (info.get("params") or {}).items() if k in ("nlist", "nprobe", "ef_search")}
    if knob:
        line += " (" + ", ".join(f"{k} {v}" for k, v in knob.items()) + ")"
    if info["kind"] != "flat" and info.get("recall_at_k") is not None:
        line += f", recall@{info.get('recall_k')} {info['recall_at_k']}"
    return line


def run_rebuild(args: argparse.Namespace) -> int:
    params = {k: v for k, v in {"nlist": args.nlist, "nprobe": args.nprobe,
                                "target_recall": args.target_recall}.items() if v is not None}
    try:
        with open_library(args, create=False) as library:
            info = library.rebuild_index(args.index, **params)
    except user_errors() as exc:
        return fail(exc)
    print(json_text(info) if args.json else rebuild_sentence(info))
    return 0
