"""`clipforge tag` on a milvus-lite library, `kill -9`-ed mid-run, leaves one vocabulary answering everywhere.

Milvus has no transactions, and `tag` rewrote each photo's row in place after recording the new vocabulary
first: a kill between two chunks left 1,024 photos tagged 'cat, dog', the rest still 'red, green, blue', and the
store saying its vocabulary was 'cat, dog' (a tag filter, `tag --list` and the photos an add tags later all mixed
two label sets). Now a run writes the space's rows, newly tagged, into a fresh collection and switches the space to
it (with the vocabulary recorded for that collection) in one row of the registry; the next run drops what a killed
one left. The library is rows written through the store itself (random unit vectors, no image decoded); the kill is
a real SIGKILL of a subprocess, after its first chunk of the second run is written (hooked there, never timed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from clipforge.library.milvus_library import MilvusLibrary  # noqa: E402
from clipforge.library.milvus_tags import Vocabularies  # noqa: E402
from clipforge.library.tagging import tag_vocabulary  # noqa: E402

PHOTOS = 1030  # more than one chunk (1,024 rows) of a run
OLD, NEW = ["red", "green", "blue"], ["cat", "dog"]

# Builds the library, tags it OLD, then tags it NEW and stops for good after the first chunk of rows it writes.
_RUN = """
import sys, time
import numpy as np
from pymilvus import MilvusClient
from clipforge.library.milvus_library import MilvusLibrary
from clipforge.library.milvus_writer import row_from_record
from clipforge.library.store import ImageRecord

store, folder, photos = sys.argv[1], sys.argv[2], int(sys.argv[3])
library = MilvusLibrary(store, folder, "test-vit-tiny")
dim = library.encoder.embed_dim
rng = np.random.default_rng(0)
rows = []
for i in range(photos):
    vector = rng.standard_normal(dim).astype(np.float32)
    record = ImageRecord(i + 1, f"/photos/p{i:04d}.jpg", f"{i:064x}", 1, 1, 8, 8, 0.0, "ok", None)
    rows.append(row_from_record(record, vector / np.linalg.norm(vector), dim))
library.space.upsert(rows)
library.classify(%(old)r, "simple", top_k=2, progress=False)
print("old", flush=True)

def stopped_after_first_chunk(real):
    def write(self, collection, data, *args, **kwargs):
        out = real(self, collection, data, *args, **kwargs)
        if collection.startswith("photos_m") and len(data) > 1:  # a chunk of photo rows, not a registry row
            print("chunk", flush=True)
            time.sleep(120)
        return out
    return write

MilvusClient.upsert = stopped_after_first_chunk(MilvusClient.upsert)
MilvusClient.insert = stopped_after_first_chunk(MilvusClient.insert)
library.classify(%(new)r, "simple", top_k=2, progress=False)
print("finished", flush=True)
"""


def _answers(library: MilvusLibrary) -> tuple[list[str], dict[str, set[str]], dict[str, int]]:
    """(the recorded vocabulary's labels, path -> its tags' labels, `tag --list`'s counts)."""
    space = library.space
    vocabulary = tag_vocabulary(Vocabularies(library.milvus), space.fingerprint) or {}
    rows = {r["path"]: set(r["tags"]) for r in space.iter_rows('status == "ok"', ["path", "tags"])}
    return vocabulary.get("labels", []), rows, library.tag_counts()


def _collections(store_folder: Path) -> list[str]:
    return sorted(p.name for p in (store_folder / "collections").iterdir())


def test_tag_killed_mid_run_leaves_the_old_vocabulary_everywhere_and_a_rerun_cleans(tmp_path) -> None:
    store = f"milvus-lite:{tmp_path}/m.db#photos"
    folder = tmp_path / "mlib"
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN % {"old": ", ".join(OLD), "new": ", ".join(NEW)}, store, str(folder),
         str(PHOTOS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    said: list[str] = []
    deadline = time.monotonic() + 120
    while "chunk" not in said and time.monotonic() < deadline:
        line = proc.stdout.readline().decode().strip()
        if not line and proc.poll() is not None:
            break
        said.append(line)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its milvus-lite engine
    proc.wait()
    assert said[-2:] == ["old", "chunk"], (said, proc.stderr.read().decode(errors="replace")[-2000:])

    with MilvusLibrary(store, folder) as library:
        labels, tags, counts = _answers(library)
        assert labels == OLD  # the vocabulary the killed run did not switch to ...
        assert len(tags) == PHOTOS and all(t and t <= set(OLD) for t in tags.values())  # ... is every photo's
        assert set(counts) <= set(OLD) and sum(counts.values()) == PHOTOS
        assert library.search("a photo", top_k=5, filter_tags=NEW) == []
        assert len(library.search("a photo", top_k=PHOTOS, filter_tags=OLD)) == PHOTOS

        report = library.classify(", ".join(NEW), "simple", top_k=2, progress=False)
        assert report.images == PHOTOS
        labels, tags, counts = _answers(library)
        assert labels == NEW and len(tags) == PHOTOS and all(t == set(NEW) for t in tags.values())
        assert sum(counts.values()) == PHOTOS and set(counts) <= set(NEW)
        vocabularies = library.milvus.call(library.milvus.client.query, library.milvus.tagsets,
                                           filter='fingerprint != ""', output_fields=["vocabulary"])
        assert [json.loads(v["vocabulary"])["labels"] for v in vocabularies] == [NEW]  # no leftover record
        space = library.space.collection
    assert _collections(tmp_path / "m.db") == sorted([space, "photos_spaces", "photos_tagsets"])  # nor rows


def test_tag_stopped_after_the_switch_answers_with_the_new_vocabulary_and_drop_space_forgets_all(
    tmp_path, tiny_encoder, images_factory, monkeypatch
) -> None:
    """Stopped after the switch, while dropping the old rows (an exception where a kill would land): the library
    answers with the new labels, the old collection is left to the next run; `index drop-space` forgets every
    collection and vocabulary record of the space, leftovers included."""
    from clipforge.library.milvus_store import MilvusStore

    images_factory(tmp_path / "photos", 4)
    store = f"milvus-lite:{tmp_path}/m.db#photos"
    with MilvusLibrary(store, tmp_path / "mlib", tiny_encoder) as library:
        library.add(tmp_path / "photos", workers=0, progress=False)
        library.classify(OLD, "simple", top_k=2, progress=False)
        first = library.space.collection
        real = MilvusStore.forget_collection

        def stopped(self, fingerprint, collection):
            raise KeyboardInterrupt

        monkeypatch.setattr(MilvusStore, "forget_collection", stopped)
        with pytest.raises(KeyboardInterrupt):
            library.classify(NEW, "simple", top_k=2, progress=False)
        monkeypatch.setattr(MilvusStore, "forget_collection", real)
        second = library.space.collection
        assert first != second and first.startswith("photos_m") and second == first[:-1] + "2"
        assert _collections(tmp_path / "m.db") == sorted([first, second, "photos_spaces", "photos_tagsets"])
        labels, tags, counts = _answers(library)
        assert labels == NEW and len(tags) == 4 and all(t == set(NEW) for t in tags.values())
        assert set(counts) <= set(NEW) and sum(counts.values()) == 4
        assert len(library.search("a photo", top_k=10, filter_tags=NEW)) == 4

        library.classify(NEW, "simple", top_k=2, progress=False)  # drops what the stopped run left first
        third = library.space.collection
        assert _collections(tmp_path / "m.db") == sorted([third, "photos_spaces", "photos_tagsets"])

        library.classify(OLD, "simple", top_k=2, progress=False)
        monkeypatch.setattr(MilvusStore, "forget_collection", stopped)
        with pytest.raises(KeyboardInterrupt):
            library.classify(NEW, "simple", top_k=2, progress=False)
        monkeypatch.setattr(MilvusStore, "forget_collection", real)
        assert len(_collections(tmp_path / "m.db")) == 4  # two of the space's, the registry, the vocabularies
        library.drop_space(library.space.fingerprint)
        vocabularies = library.milvus.call(library.milvus.client.query, library.milvus.tagsets,
                                           filter='fingerprint != ""', output_fields=["fingerprint"])
        assert vocabularies == [] and _collections(tmp_path / "m.db") == ["photos_spaces", "photos_tagsets"]
