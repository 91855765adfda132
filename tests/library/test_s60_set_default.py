"""A library built with an older build of a model under the same name can be moved to the build offered (stop 60).

The shipped clipforge-tiny's preprocessing changed after the first release, so its fingerprint did: a library of that
release was refused with "built with clipforge-tiny (fingerprint f724...), but the model offered is clipforge-tiny
(fingerprint 0a99...)", which said neither that these were two builds of one name nor what to do. Following its
advice (`index add --model clipforge-tiny`, a second space) left the old space the default for good: `drop-space`
refused the default and listed "spaces: clipforge-tiny, clipforge-tiny", and `index stats` showed the old space's tags
while plain `search` and `tag` used the new one. Now the refusal gives the three commands, `index set-default` makes
the new space the default on both stores, and every space listing tells two builds of one name apart.

The older build is forged: the same test model under its name with another fingerprint (`Encoder(fingerprint=...)`),
as the first release's library records it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipforge.cli.main import main
from clipforge.library import Library
from clipforge.library.encoder import Encoder, resolve_encoder

NAME = "test-rn-tiny"
OLD = "f724b9def30a5c11"  # the older build's fingerprint; its first 12 characters are what messages show
STORES = ["sqlite", "milvus-lite"]


def _milvus_or_skip(kind: str) -> None:
    if kind == "milvus-lite":
        pytest.importorskip("pymilvus")
        pytest.importorskip("milvus_lite")


def _where(kind: str, tmp_path: Path) -> list[str]:
    lib = ["--library", str(tmp_path / "lib")]
    return lib if kind == "sqlite" else [*lib, "--store", f"milvus-lite:{tmp_path}/m.db"]


def _target(kind: str, tmp_path: Path) -> str:
    """How the messages name the library in the commands they give."""
    return f"--library {tmp_path / 'lib'}" if kind == "sqlite" else f"--store milvus-lite:{tmp_path}/m.db"


def _open(kind: str, tmp_path: Path, model: object = None, **kwargs: object):
    if kind == "sqlite":
        return Library(tmp_path / "lib", model, **kwargs)
    from clipforge.library.milvus_library import MilvusLibrary

    return MilvusLibrary(f"milvus-lite:{tmp_path}/m.db", tmp_path / "lib", model, **kwargs)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _older_build(kind: str, tmp_path: Path, photos: Path) -> str:
    """A library of 3 photos built and tagged with an older build of NAME; the fingerprint of the build offered."""
    current = resolve_encoder(NAME)
    older = Encoder(current.model, current.preprocess, name=NAME, fingerprint=OLD)
    with _open(kind, tmp_path, older) as library:
        library.add(photos, workers=0, progress=False)
        library.classify("old-a,old-b", progress=False)
    return current.fingerprint


def _stats(capsys, where: list[str]) -> dict:
    code, out, err = _run(capsys, "index", "stats", "--json", *where)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("kind", STORES)
def test_an_older_build_of_the_same_name_is_moved_to_the_build_offered(kind, tmp_path, images_factory,
                                                                       capsys) -> None:
    _milvus_or_skip(kind)
    images_factory(tmp_path / "photos", 3, formats=("png",))
    new = _older_build(kind, tmp_path, tmp_path / "photos")
    where, target = _where(kind, tmp_path), _target(kind, tmp_path)
    described = f"library {tmp_path / 'lib'}" if kind == "sqlite" else \
        f"milvus-lite:{tmp_path}/m.db (collection clipforge)"
    photos = " 3 photos" if kind == "sqlite" else " photos"  # a Milvus store is not counted to refuse it

    # (a) the refusal says these are two builds of one name and gives the three commands
    code, _, err = _run(capsys, "search", "a photo", *where)
    assert code != 0
    assert err == (
        f"error: {described} was built with an older build of {NAME} (fingerprint {OLD[:12]}) than the {NAME} "
        f"offered now (fingerprint {new[:12]}): its weights or preprocessing changed since, and vectors of two builds "
        f"cannot be searched together. To move the library to this build, re-embed its{photos} as a new model space: "
        f"`clipforge index add {target} --model {NAME}`, then `clipforge index set-default {target} {new[:12]}` and "
        f"`clipforge index drop-space {target} {OLD[:12]}`\n"), err

    # the first command: a second space of the same name, with a notice that names both builds and the next steps
    code, _, err = _run(capsys, "index", "add", *where, "--model", NAME, "--workers", "0", "-q")
    assert code == 0, err
    what = (f"filled model space {NAME} ({new[:12]}) with 3 images the library already held (indexed with another "
            "model)" if kind == "sqlite" else f"indexed into model space {NAME} ({new[:12]})")  # as each store says
    assert err == (
        f"notice: {what}; the library's default is still an older build of {NAME} ({OLD[:12]}): make this one the "
        f"default with `clipforge index set-default {target} {new[:12]}`, then forget the old one with `clipforge "
        f"index drop-space {target} {OLD[:12]}`\n"), err
    assert _run(capsys, "tag", *where, "--labels", "new-a,new-b")[0] == 0  # plain `tag`: the build offered
    # (c) before set-default: `index stats` still reads the old default space, beside search and tag's new one
    tags = _stats(capsys, where)["tags"]
    assert tags and set(tags) <= {"old-a", "old-b"}, tags

    # (b)+(3): the default cannot be dropped, and a prefix matching both is refused with both told apart
    code, _, err = _run(capsys, "index", "drop-space", *where, NAME)
    assert code != 0
    assert f"has no single model space {NAME!r}: it names 2 of them (spaces: {NAME} ({OLD[:12]}), {NAME} " \
           f"({new[:12]})); name one by its fingerprint" in err, err
    code, _, err = _run(capsys, "index", "drop-space", *where, OLD[:6])
    assert code != 0 and f"`clipforge index set-default {target} MODEL`" in err, err

    code, out, err = _run(capsys, "index", "set-default", *where, new[:6])
    assert code == 0, err
    assert out == (f"model space {NAME} ({new[:12]}) is the default now: plain `search`, `tag` and `index stats` use "
                   "it (a server still open on this library must be restarted)\n")
    stats = _stats(capsys, where)
    assert stats["model"]["fingerprint"] == new and stats["model"]["name"] == NAME
    assert sorted((s["fingerprint"], s["default"]) for s in stats["spaces"]) == sorted([(new, True), (OLD, False)])
    # (4) stats, tag and search agree on the default: the new space's tags, and a tag filter finds them
    assert stats["tags"] and set(stats["tags"]) <= {"new-a", "new-b"}, stats["tags"]
    code, out, _ = _run(capsys, "tag", "--list", *where)
    assert code == 0 and "new-a" in out and "old-a" not in out, out
    code, out, err = _run(capsys, "search", "a photo", *where, "--json")
    assert code == 0 and len(json.loads(out)["results"]) == 3, (out, err)

    # the old build's space goes now; the library opens without a word, its default the build offered
    code, out, err = _run(capsys, "index", "drop-space", *where, OLD[:12])
    assert code == 0 and out == f"dropped model space {NAME} ({OLD[:12]}): 3 vectors\n", (out, err)
    stats = _stats(capsys, where)
    assert [(s["fingerprint"], s["default"]) for s in stats["spaces"]] == [(new, True)]
    with _open(kind, tmp_path, create=False) as library:
        assert library.encoder.fingerprint == new
        assert len(library.search("a photo", top_k=5)) == 3


@pytest.mark.parametrize("kind", STORES)
def test_set_default_names_a_space_as_drop_space_does(kind, tmp_path, images_factory, capsys) -> None:
    """By name or fingerprint prefix of >= 6 characters; an unknown one is refused with the spaces listed, exit 2;
    the default already is said so."""
    _milvus_or_skip(kind)
    images_factory(tmp_path / "photos", 2, formats=("png",))
    where = _where(kind, tmp_path)
    assert _run(capsys, "index", "add", str(tmp_path / "photos"), *where, "--model", "test-vit-tiny", "--workers",
                "0", "-q")[0] == 0
    assert _run(capsys, "index", "add", *where, "--model", NAME, "--workers", "0", "-q")[0] == 0
    vit = resolve_encoder("test-vit-tiny").fingerprint
    rn = resolve_encoder(NAME).fingerprint
    code, out, err = _run(capsys, "index", "set-default", *where, "test-vit-tiny")
    assert code == 0 and out == f"model space test-vit-tiny ({vit[:12]}) is the default already\n", (out, err)
    code, _, err = _run(capsys, "index", "set-default", *where, rn[:5])  # too short a prefix: not a name
    assert code == 2 and err.endswith(f"has no single model space {rn[:5]!r} (spaces: test-vit-tiny, {NAME})\n"), err
    assert _run(capsys, "index", "set-default", *where, NAME)[0] == 0
    with _open(kind, tmp_path, create=False) as library:  # opened without a model: the new default's
        assert library.encoder.name == NAME
        assert {s["name"]: s["default"] for s in library.spaces()} == {NAME: True, "test-vit-tiny": False}
    # the other way back, by fingerprint prefix; the space that was the default can be dropped now
    assert _run(capsys, "index", "set-default", *where, vit[:6])[0] == 0
    code, out, err = _run(capsys, "index", "drop-space", *where, NAME)
    assert code == 0 and out == f"dropped model space {NAME} ({rn[:12]}): 2 vectors\n", (out, err)
    assert [s["name"] for s in _stats(capsys, where)["spaces"]] == ["test-vit-tiny"]


def test_a_different_model_keeps_its_refusal(tmp_path, images_factory) -> None:
    """Only the same name under another fingerprint is told as an older build: another model's refusal stands."""
    from clipforge.library import ModelMismatchError

    images_factory(tmp_path / "photos", 1, formats=("png",))
    with Library(tmp_path / "lib", "test-vit-tiny") as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
    with pytest.raises(ModelMismatchError, match=r"was built with test-vit-tiny \(fingerprint \w{12}\), but the "
                                                 r"model offered is test-rn-tiny"):
        Library(tmp_path / "lib", NAME)
