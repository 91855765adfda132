"""The web UI's side of tags and upload names (issue 20, item 5), through its handlers without a browser."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

pytest.importorskip("gradio")

from clipforge.library import Library  # noqa: E402


def _run(result):
    """The UI's handlers are coroutines (they wait for their turn in the server's fair gate)."""
    import asyncio
    import inspect

    return asyncio.run(result) if inspect.isawaitable(result) else result


def test_ui_keeps_upload_names_lists_tags_and_explains_an_empty_tag_filter(tmp_path, tiny_encoder, images_factory):
    from clipforge.server.service import LibraryService
    from clipforge.server.ui import _Handlers

    images_factory(tmp_path / "photos", 4)
    library = Library(tmp_path / "lib", tiny_encoder)
    library.add(tmp_path / "photos", workers=0, progress=False)
    library.classify("cat, dog", templates="simple", top_k=1, progress=False)
    upload_dir = tmp_path / "gradio"
    upload_dir.mkdir()
    photo = upload_dir / "f00d" / "upload.png"
    photo.parent.mkdir()
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (30, 160, 90)).save(buffer, format="PNG")
    photo.write_bytes(buffer.getvalue())
    handlers = _Handlers(LibraryService(library), str(upload_dir))
    message, _, summary, _ = _run(handlers.add([{"path": str(photo), "orig_name": "My Cat.png",
                                            "meta": {"_type": "gradio.FileData"}}], None, 0))
    assert message.startswith("Added 1 image(s)")
    added = max(library.list_images(), key=lambda r: r.id)
    assert os.path.basename(added.path) == "My Cat.png" and len(library.tags(added.id)) == 1  # named, tagged
    counts = library.stats()["tags"]  # the labels photos have, most first
    assert sum(counts.values()) == 5 and sum(library.tag_counts().values()) == 5
    summary = summary.split("\n\n")[0]  # then the originals' links (stop 50)
    assert summary.endswith(" · tags: " + ", ".join(f"{k} ({v})" for k, v in counts.items()))
    _, status = _run(handlers.search("a photo", None, 5, "giraffe"))
    assert status.startswith("No results: no photo has tag 'giraffe'; tags: ") and "empty" not in status
    library.close()
