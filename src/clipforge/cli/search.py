"""`clipforge search QUERY` / `--image q.jpg`: find library images by text, image, or both.

QUERY may use arithmetic: '"cat" + photo.jpg - "grass"', with weights like '2:"cat"'.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from clipforge.cli.common import json_text, one_line
from clipforge.cli.library_args import add_library_arguments, display_path, fail, open_library, user_errors


class _JoinedWords(argparse.Action):
    """The words of an unquoted query as one text (`search cat dog` was "unrecognized arguments: dog")."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        words = [values] if isinstance(values, str) else list(values or [])  # type: ignore[call-overload]
        setattr(namespace, self.dest, " ".join(words) if words else None)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "search", help="search a library by text, image, or query arithmetic",
        description='Search an image library. QUERY: text ("a dog on the beach"), or arithmetic such as '
                    '\'"cat" + photo.jpg - "grass"\' and \'2:"cat" + "sofa"\'. Quoted = text; a bare word is text '
                    'too, unless it names an image: an image extension (photo.jpg) or an existing file\'s path '
                    '(./scan0001, ~/x). Prefixes decide: image:FILE (image:cat, image:"my photo.png") searches by '
                    'that file, text:WORDS (text:photo.jpg) by the words. Quotes among words are text (\'a painting called '
                    '"Starry Night"\'); N: before a lone number is text too (10:30 meeting, 16:9 screen), a weight before a word (2:3d render).')
    parser.add_argument("query", nargs="*", default=None, action=_JoinedWords,
                        help="text or query arithmetic (several words without quotes are one text: "
                             "`clipforge search red car` searches \"red car\"); image:FILE and text:WORDS force "
                             "a term's kind")
    parser.add_argument("--image", action="append", default=[], metavar="IMG",
                        help="query image (repeatable; added to QUERY when both are given)")
    parser.add_argument("--top-k", "-k", type=int, default=20, help="results (default 20)")
    parser.add_argument("--tag", action="append", default=[], metavar="LABEL",
                        help="only images whose top zero-shot tag is LABEL (repeatable; see `clipforge tag`)")
    parser.add_argument("--in", dest="folders", action="append", default=[], metavar="DIR",
                        help="only photos in DIR and its subfolders (repeatable); new or changed photos there are "
                             "indexed first, as `index add DIR` would (rclip's habit: search a folder by just "
                             "naming it)")
    parser.add_argument("--no-index", action="store_true",
                        help="with --in: search what is already indexed there, without indexing first")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true",
                        help="print JSON (each result's \"missing\": its file deleted since indexed; "
                             "\"folder_missing\": its folder not found on this machine)")
    output.add_argument("--paths", action="store_true",
                        help="print only the files, one per line, best first (for pipes: `... --paths | xargs feh`; "
                             "names as the file system spells them)")
    # No `-0` alias: an option spelled like a number makes argparse read `--top-k -5` as an option, not a value.
    parser.add_argument("--null", action="store_true",
                        help="with --paths: end each name with a NUL byte instead of a newline, for `xargs -0` "
                             "(a name may hold a newline, which splits it in a line-based pipe)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bar, notices or indexing summary on stderr (results and errors only)")
    add_library_arguments(parser)
    parser.set_defaults(func=run)


def _towers(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    """A query of texts alone (or images alone) on the embedded store: the model is loaded without
    the tower it does not need (`clipforge.api.load_model`'s `towers`)."""
    if getattr(args, "store", None) not in (None, "", "sqlite"):
        return {}
    from clipforge.library.query import parse_query

    try:
        kinds = {term.kind for term in parse_query(args.query)} if args.query else set()
    except ValueError:  # the search reports the query's problem itself
        return {}
    kinds |= {"image"} if args.image else set()
    return {"towers": (kinds.pop(),)} if len(kinds) == 1 else {}


def _notices(query: str, encoder: object) -> list[str]:
    """What to say about the query's texts (not its operators, weights, quotes or image paths): a script the
    model was not trained for, and each text the model's context cut (`zeroshot.languages.text_notices`)."""
    from clipforge.library.query import parse_query
    from clipforge.zeroshot.languages import text_notices

    texts = [term.value for term in parse_query(query) if term.kind == "text"]
    return text_notices(texts, encoder, getattr(encoder, "name", None) or "in use")


def _terms(query: str | None) -> list:
    """The query's terms as the search reads them (`parse_query`, the library's own parse); [] without a query."""
    from clipforge.library.query import parse_query

    return parse_query(query) if query else []


def _file_named_like(terms: list) -> str | None:
    """A notice when a bare word searched as text also names a file here (`search cat` beside a copy of a photo
    named `cat` was an image search, silently; beside a text file `sunset`, `search sunset` failed "not an
    image"); None otherwise. The file is not opened: the notice only names the prefix that would use it."""
    for term in terms:
        if term.kind == "text" and term.bare and os.path.isfile(term.value):
            return (f"notice: {term.value!r} was searched as text, though a file of that name is here: "
                    f"`image:{term.value}` searches by that file")
    return None


def _space_hint(library: object, texts: list[str]) -> str | None:
    """After the language notice (the query's script is one the model was not trained for): the library's model
    space whose model reads that script, with the flag that searches it; None when there is none."""
    from clipforge.zeroshot.languages import MULTILINGUAL, language_of, model_languages

    script = language_of(" ".join(texts))
    spoken = model_languages(library.encoder)  # type: ignore[attr-defined]
    if script == "en" or script in spoken or MULTILINGUAL in spoken:
        return None
    for space in library.spaces():  # type: ignore[attr-defined]  # both stores list them
        name = space.get("name")
        if name and space["fingerprint"] != library.encoder.fingerprint:  # type: ignore[attr-defined]
            languages = model_languages(name)
            if script in languages or MULTILINGUAL in languages:
                return f"notice: this library has a model space of {name}, which reads {script}: add `--model {name}`"
    return None


def _shown(paths: list[str]) -> str:
    return ", ".join(one_line(display_path(path)) for path in paths[:3]) + (", ..." if len(paths) > 3 else "")


def _identical(hit: object) -> str:
    """'  (+N identical: a, b, ...)' for a hit whose bytes the library holds in other files too (one vector,
    one result: the copies were shown by --json's `duplicates` only), and '  (same file also named: c)' for the
    other names of this very file (a symlinked folder's name and its real path, a hard link: not copies, and
    someone deleting copies deleted the only file); '' when there are none."""
    copies = list(getattr(hit, "duplicates", None) or [])
    names = list(getattr(hit, "same_file", None) or [])
    said = f"  (+{len(copies)} identical: {_shown(copies)})" if copies else ""
    return said + (f"  (same file also named: {_shown(names)})" if names else "")


def _not_there(folder: str) -> str:
    """Why `folder` (no folder now) is not there: a link whose target is gone (an unplugged drive: it read "is a
    file, not a folder"), or nothing at all."""
    if not os.path.islink(folder):
        return "no such folder"
    target = os.path.join(os.path.dirname(os.path.abspath(folder)), os.readlink(folder))
    return (f"a link to {one_line(display_path(os.path.normpath(target)))}, which is not there (a drive not mounted, or a "
            "folder moved?)")


def _unopenable(paths: list[str]) -> str:
    """`--paths --quiet`'s one line for the names it writes whose folder is not found here (moved, renamed, a drive
    not mounted): the names are the library's and are written (a drive mounted again opens them), but a pipe cannot
    open them now, and --quiet had left that unsaid (audit 66). Not a notice: --quiet does not silence it."""
    count = f"{len(paths)} of these names {'is' if len(paths) == 1 else 'are'}"
    return (f"warning: {count} in a folder not found on this machine "
            f"({_shown(sorted({os.path.dirname(path) for path in paths}))}): they cannot be opened now "
            "(--json marks them \"folder_missing\")")


def _no_results(library: object, args: argparse.Namespace) -> str:
    if not args.folders:
        return library.no_results_reason(args.tag or None)  # type: ignore[attr-defined]  # both stores have it
    where = ", ".join(map(display_path, args.folders))
    tagged = f" with tag {', '.join(args.tag)}" if args.tag else ""
    hint = " (without --no-index, search indexes the photos there first)" if args.no_index else ""
    return f"no indexed photo in {where}{tagged}{hint}"


def _text_arguments(args: argparse.Namespace) -> None:
    """UsageError, before the library or model is opened, for a text of the query or a --tag that is not text to
    search by (`text.typed.check_argument`): bytes that are not UTF-8 were searched as U+FFFD or failed in SQLite with
    a bare codec message; invisible characters alone were searched as an empty prompt. The query's image terms are
    file names, which may hold any bytes; a query that does not parse is said by the search itself."""
    from clipforge.text.typed import check_argument

    try:
        terms = _terms(args.query)
    except ValueError:
        terms = []
    for term in terms:
        if term.kind == "text":
            check_argument(term.value, "QUERY", words=True)
    args.tag = [check_argument(tag, "--tag", words=True) for tag in args.tag]


def run(args: argparse.Namespace) -> int:
    if not args.query and not args.image:
        return fail("give a QUERY, --image IMG, or both")
    try:
        _text_arguments(args)
    except ValueError as exc:
        return fail(exc)
    if args.null and args.json:  # "give --paths too" sent the user to a pair argparse refuses (--json with --paths)
        return fail("--null is for --paths: --json already writes a name holding a newline as \\n (drop --null)")
    if args.null and not args.paths:
        return fail("--null changes how --paths ends each name: give --paths too")
    if args.top_k < 1:
        return fail(f"--top-k must be at least 1 (the number of results to show), got {args.top_k}")
    absent: list[str] = []  # with --no-index: folders not there now, searched in the records all the same
    for folder in args.folders:
        if os.path.isdir(folder):
            continue
        if os.path.exists(folder):
            return fail(f"--in {display_path(folder)}: is a file, not a folder (to find photos like it: --image "
                        f"{display_path(folder)})")
        if not args.no_index:  # a link's target gone is an unplugged drive; a name with nothing there, a typo
            hint = "; --no-index searches the photos indexed there" if os.path.islink(folder) else ""
            return fail(f"--in {display_path(folder)}: {_not_there(folder)}{hint}")
        absent.append(folder)
    index_first = bool(args.folders) and not args.no_index
    from clipforge.library.scan_notices import NotUtf8NamesNotice, UnreadablePhotosNotice

    try:  # indexing needs the image tower and may create the library
        with open_library(args, create=index_first, **({} if index_first else _towers(args))) as library:
            if index_first:
                with warnings.catch_warnings(record=True) as said:  # the scan's notices go with the summary
                    warnings.simplefilter("always", UnreadablePhotosNotice)
                    warnings.simplefilter("always", NotUtf8NamesNotice)
                    report = library.add(args.folders, progress=not (args.json or args.paths or args.quiet)
                                         and sys.stderr.isatty())
                summary = (report.added or report.updated or report.relinked or report.failed) and not args.quiet
                if summary:
                    print(f"indexed {', '.join(map(display_path, args.folders))}: {report.summary_line()}",
                          file=sys.stderr)
                for warning in said:  # the scan's: once, when the folder is indexed, not at every search
                    if summary or not issubclass(warning.category, (UnreadablePhotosNotice, NotUtf8NamesNotice)):
                        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            hits = library.search(args.query, image=args.image or None, top_k=args.top_k,
                                  filter_tags=args.tag or None, under=args.folders or None)
            if absent and not hits and len(absent) == len(args.folders):  # a typo stays an error, as before
                return fail(f"--in {display_path(absent[0])}: {_not_there(absent[0])}, and the library holds "
                            "no photo indexed there")
            if absent and not args.quiet:
                print(f"notice: --in {display_path(absent[0])}: {_not_there(absent[0])}; searched the photos "
                      "indexed there (their files cannot be opened now)", file=sys.stderr)
            empty = _no_results(library, args) if not hits else ""
            terms = _terms(args.query)
            notices = [] if args.quiet or not args.query else _notices(args.query, library.encoder)
            texts = [term.value for term in terms if term.kind == "text"]
            if notices and texts:
                notices.append(_space_hint(library, texts))
            for notice in notices + [None if args.quiet else _file_named_like(terms)]:
                if notice:
                    print(notice, file=sys.stderr)
    except user_errors() as exc:  # QueryError, ImageLoadError, ModelMismatchError are ValueErrors
        return fail(exc)
    # A file gone from a folder this machine sees; a Milvus store's photos may live on the machines that indexed
    # them, whose folders are not here: those are not called missing.
    from clipforge.library.search import deleted_since_indexed  # the one rule of every "missing" mark

    # A Milvus server's photos live on the machines that indexed them: neither mark is given there (every row of every
    # search from a laptop was "folder not found"; "missing" sent it to `index prune`, which would forget other
    # machines' photos; relinking would put this machine's paths into the shared records). milvus-lite is local.
    local = getattr(getattr(library, "spec", None), "kind", "sqlite") != "milvus"
    gone = {hit.path for hit in hits if local and deleted_since_indexed(hit.path)}
    if gone and not args.quiet:  # deleted since indexed: a `--paths | xargs` pipe would get names that do not open
        marked = "left out of --paths" if args.paths else "marked 'missing'"
        print(f"notice: {len(gone)} of these photos {'is' if len(gone) == 1 else 'are'} no longer on disk ({marked}); "
              "`clipforge index prune` forgets the library's photos whose files are gone", file=sys.stderr)
    # Not here and neither is its folder: a folder moved or renamed, an unplugged drive, or a Milvus store's photos
    # on another machine. Listed as before (not called deleted), but said: `--paths` piped names that did not open.
    unreachable = [hit.path for hit in hits if local and hit.path not in gone and not os.path.lexists(hit.path)]
    unreachable_set = set(unreachable)  # each result's "folder_missing" (a list scan per result: k^2 at -k 20000)
    said = [os.path.join(os.path.abspath(folder), "") for folder in absent]  # --in folders already said not there
    away = [path for path in unreachable if not any(path.startswith(folder) for folder in said)]
    if away and not args.quiet:
        print(f"notice: {len(away)} of these photos {'is' if len(away) == 1 else 'are'} in a folder not found on this "
              f"machine ({_shown(sorted({os.path.dirname(path) for path in away}))}): moved, renamed or deleted, or on "
              "a drive not mounted; `clipforge index add NEW/FOLDER` finds a moved folder's photos again without "
              "embedding them again", file=sys.stderr)
    if args.json:  # the images searched by: the query's image terms, then --image's
        from clipforge.library.dbfile import (
            path_text,  # a name that is not UTF-8 as b64:, as each result's path
        )

        images = [path_text(path) for path in [t.value for t in terms if t.kind == "image"] + args.image]
        # each result says whether its file is gone (a script read a deleted photo as result 1, nothing marked), and
        # whether its folder is (the plain output's "folder not found": it was `"missing": false` alone, audit 66)
        results = [{**h.to_dict(), "missing": h.path in gone, "folder_missing": h.path in unreachable_set} for h in hits]
        # why nothing was found, as the REST answer's `reason` (the same `no_results_reason`); null with results
        print(json_text({"query": args.query, "images": images, "results": results, "reason": empty or None}))
        return 0
    if args.paths:  # raw names (not `display_path`), so a pipe gets names that open, whatever their bytes
        # a file gone from disk is not piped (`xargs ls` failed on it; the notice above counts it, --json lists it)
        hits = [hit for hit in hits if hit.path not in gone]
        split = sum("\n" in hit.path for hit in hits)
        if split and not args.null and not args.quiet:
            print(f"notice: {split} of these names {'holds' if split == 1 else 'hold'} a newline, which splits it "
                  "in a line-based pipe: add --null and read them with `xargs -0`", file=sys.stderr)
        if args.quiet and unreachable:  # stdout cannot mark them, and --quiet silenced the notices that do
            print(_unopenable(unreachable), file=sys.stderr)
        end = b"\0" if args.null else b"\n"
        sys.stdout.flush()
        sys.stdout.buffer.write(b"".join(os.fsencode(hit.path) + end for hit in hits))
        sys.stdout.buffer.flush()
        if not hits:
            print(f"no results: {empty or 'every match is gone from disk'}", file=sys.stderr)
        copies = [path for hit in hits for path in hit.duplicates]
        if copies and not args.quiet:  # a pipe gets one name per result (one per content); the copies are said
            print(f"notice: {len(copies)} identical {'copy' if len(copies) == 1 else 'copies'} of these photos "
                  f"{'is' if len(copies) == 1 else 'are'} not listed, one name per content ({_shown(copies)}); "
                  "--json lists each result's `duplicates`", file=sys.stderr)
        return 0
    if not hits:  # a notice, not a result: a `while read rank score path` loop read it as one
        print(f"no results: {empty}", file=sys.stderr)
    for rank, hit in enumerate(hits, 1):
        tag = f"  [{hit.tags[0][0]}]" if hit.tags else ""
        mark = "  (missing)" if hit.path in gone else "  (folder not found)" if hit.path in away else ""
        print(f"{rank:3d}  {hit.score:.4f}  {one_line(display_path(hit.path))}{tag}{mark}{_identical(hit)}")
    return 0
