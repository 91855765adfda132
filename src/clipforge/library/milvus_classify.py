"""`MilvusLibrary`'s zero-shot tags: tagging every photo of a space, one image, and reading the tags back.

`classify` (``clipforge tag``) writes each photo's top labels into its row (at most `MAX_TAGS`, the schema's
capacity) and remembers the vocabulary in the store, so later adds by any process tag with it (on milvus-lite the
rows and the vocabulary switch together, a kill anywhere leaving one vocabulary's tags: `milvus_retag`);
`classify_image` (one image, nothing stored) is every store's (`queries.QueryMethods`); `tags`, `tag_counts` and
`no_results_reason` read the stored tags as the embedded store's `tagging` does. The tagging rule itself is
`clipforge.library.milvus_tags`. A part of `MilvusLibrary` (`clipforge.library.milvus_library`), whose
`__init__` sets the attributes these methods read.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Sequence

from clipforge.library.milvus_retag import retag_space, row_chunks, tag_chunk
from clipforge.library.milvus_stats import ranked_counts
from clipforge.library.milvus_store import MAX_LABEL_BYTES, MAX_TAGS
from clipforge.library.milvus_tags import Vocabularies, make_tagger
from clipforge.library.tag_answers import EMPTY_LIBRARY, no_tag_sentence
from clipforge.library.tagging import (
    TagReport,
    parse_labels,
    tag_templates,
    tag_vocabulary,
)
from clipforge.text.labels import stored_tag_forms


class MilvusClassify:
    """The tagging methods of `MilvusLibrary` (see the module docstring)."""

    def classify(
        self,
        labels: str | Sequence[str],
        templates: str | Sequence[str] | None = None,
        top_k: int = 5,
        progress: bool = True,
    ) -> TagReport:
        """Zero-shot tag every image of this model's space (tags stored in its rows, filterable).

        At most `milvus_store.MAX_TAGS` (16) labels are kept per image, whatever `top_k` asks: the rows'
        tag arrays have that fixed capacity in the collection schema (the embedded store keeps `top_k`).
        The vocabulary (labels, templates, `top_k`) is remembered in the store, as `tagging.tag_library` does
        in the embedded one: photos added later, by any process, are tagged with it (`add`)."""
        started = time.perf_counter()
        labels = parse_labels(labels)
        check_label_sizes(labels)
        encoder, space = self.encoder, self.space
        # None: the default fitted to the model's context; recorded as prompted ("zh-imagenet"), as tag_library does
        choice = tag_templates(templates, labels, encoder)
        templates = choice.templates
        tag = make_tagger(encoder, labels, templates, int(top_k), self.paths.cache_dir, progress=progress)
        report = TagReport(labels=labels, templates=templates, scoring=encoder.scoring().kind,
                           notices=[n for n in (choice.notice, choice.cut_notice) if n])
        counts: Counter[str] = Counter()
        k = min(int(top_k), len(labels), MAX_TAGS)
        if min(int(top_k), len(labels)) > MAX_TAGS:  # said, not silently cut
            report.kept_note = (
                f"a Milvus library keeps {MAX_TAGS} tags per image: top_k {int(top_k)} was cut to {k}"
            )
        vocabulary = json.dumps({"labels": labels, "templates": report.templates, "top_k": int(top_k)})
        with self._lock:
            if self.spec.kind == "milvus-lite":  # killed anywhere: one vocabulary everywhere (`milvus_retag`)
                space = self.milvus.space(space.fingerprint) or space  # as the registry names it now
                try:
                    self._space, counts = retag_space(self.milvus, space, tag, vocabulary)
                except BaseException:  # stopped after the switch (dropping the old rows): read what it switched to
                    with contextlib.suppress(Exception):
                        self._space = self.milvus.space(space.fingerprint) or self._space
                    raise
                finally:
                    self._changed()  # the stats' top tags
            else:
                # A server: in place (another process may be adding rows, see `milvus_retag`), the vocabulary first,
                # so that an add running meanwhile tags with these labels. A run killed midway leaves the photos it
                # had not reached with the old labels (and the store naming the new ones) until the next run.
                self.milvus.set_tag_vocabulary(space.fingerprint, vocabulary)
                for chunk in row_chunks(space, 'status == "ok"'):  # a chunk at a time, never every row at once
                    tag_chunk(chunk, tag, counts)
                    space.upsert(chunk)
                self._changed()  # the stats' top tags
        report.images = sum(counts.values())
        report.top1_counts = ranked_counts(counts)
        report.seconds = time.perf_counter() - started
        return report

    def tags(self, image_id: int) -> list[tuple[str, float]]:
        rows = self.space.query(f"id == {int(image_id)}", ["tags", "tag_scores"], limit=1)
        return list(zip(rows[0]["tags"], map(float, rows[0]["tag_scores"]), strict=False)) if rows else []

    def tag_counts(self) -> dict[str, int]:
        """label -> photos whose top tag it is, most first (`tag --list`); the labels of the space's remembered
        vocabulary that no photo has show 0, as in the embedded store (`tag_answers.tag_counts`)."""
        counts = dict(self.stats().get("tags") or {})
        spaces = self.milvus.spaces()
        if spaces:
            space = self._space or spaces[0]  # the space `stats` counted
            vocabulary = tag_vocabulary(Vocabularies(self.milvus), space.fingerprint)
            for label in (vocabulary or {}).get("labels", []):
                counts.setdefault(label, 0)
        return counts

    def no_results_reason(self, filter_tags: str | Sequence[str] | None = None) -> str:
        """One sentence for an empty search result, as `Library.no_results_reason` says it (from `stats`: its
        counts and each photo's top tag, the one a tag filter matches)."""
        if not self.stats()["images"].get("ok"):
            return EMPTY_LIBRARY
        labels = parse_labels(filter_tags) if filter_tags else []
        counts = self.tag_counts()
        if labels and not any(counts.get(label) for label in stored_tag_forms(labels, counts)):  # NFKC forms
            return no_tag_sentence(labels, counts)
        return "no photo matched"


def check_label_sizes(labels: Sequence[str]) -> None:
    """Refuse, before the vocabulary is remembered, a label longer than a row's tag field holds (`MAX_LABEL_BYTES`
    of UTF-8, as a Milvus server counts: 171 Chinese characters are 513 bytes). milvus-lite stored it anyway, but
    a server refuses the rows, and the remembered vocabulary would then fail every later `index add`."""
    for label in labels:
        size = len(label.encode("utf-8", "surrogatepass"))
        if size > MAX_LABEL_BYTES:
            raise ValueError(
                f"label {label[:40]!r}{'...' if len(label) > 40 else ''} is {size} bytes in UTF-8; a Milvus library "
                f"stores labels of at most {MAX_LABEL_BYTES} bytes: use a shorter label"
            )
