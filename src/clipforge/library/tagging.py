"""Zero-shot tags for a whole library, stored so that searches can filter on them.

Tagging reuses the stored image vectors: classifying a million images is one matrix product
per chunk against the class embeddings, with no image decoded again. Each image keeps its
top-k labels with the model's probabilities (rank 0 = the predicted label): a softmax over the
labels for CLIP, independent sigmoids for SigLIP (`clipforge.models.scoring`); a new label set
replaces the previous tags of that model, because probabilities from different label sets
are not comparable.

The library remembers its vocabulary (labels, the templates they were prompted with - Chinese labels'
`zh-imagenet`, not the `imagenet` typed -, top-k; one `meta` row per model), so photos added later - by
`index add` or an upload - are tagged with the same labels right after they are added (`tag_new_images`):
a tag filter never silently skips them. What a search says about tags (counts, why nothing matched) is
`clipforge.library.tag_answers`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipforge.library.dbfile import DamagedLibraryError, LibraryWriteError, display_path
from clipforge.library.encoder import Encoder
from clipforge.library.store import Store
from clipforge.library.transaction import VOCABULARY_KEY
from clipforge.text.labels import split_labels

if TYPE_CHECKING:
    from clipforge.models.scoring import Scoring

__all__ = [
    "VOCABULARY_KEY",
    "TagReport",
    "count_noun",
    "parse_labels",
    "prompted_templates",
    "scored_top_k",
    "softmax_top_k",
    "tag_library",
    "tag_new_images",
    "tag_templates",
    "tag_vocabulary",
    "vocabulary_templates",
]

PURGE_IMAGES = 2048
"""Photos whose replaced tags one transaction deletes after a `tag` run's switch (as many as a run writes in one)."""

MAX_LABELS = 100_000
"""The most labels one `tag` run takes (ImageNet-21k has 21,841): each is a row of class embeddings held in memory,
and prompting a recorded vocabulary is what every later add does first."""


def count_noun(count: int, noun: str) -> str:
    """ "1 image", "2 images": the one plural rule of the library's summaries."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


@dataclass
class TagReport:
    images: int = 0
    labels: list[str] = field(default_factory=list)
    templates: str | list[str] = "imagenet"
    top1_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    scoring: str = "softmax"
    kept_note: str | None = None  # fewer tags kept per image than asked (a Milvus library's fixed capacity)
    notices: list[str] = field(default_factory=list)
    """What to say of the templates (`tag_templates`): a default that gave way to a set keeping every label, or
    how many prompts the model's context cuts the label out of; `clipforge tag` prints them on stderr."""

    @property
    def note(self) -> str | None:
        """What to tell users beside the tags: sigmoid scores do not sum to 1; fewer tags kept than asked."""
        from clipforge.models.scoring import SIGMOID_NOTE

        notes = [n for n in (SIGMOID_NOTE if self.scoring == "sigmoid" else None, self.kept_note) if n]
        return "; ".join(notes) or None

    def summary_line(self) -> str:
        top = ", ".join(f"{label} {n}" for label, n in list(self.top1_counts.items())[:10])
        return (
            f"tagged {count_noun(self.images, 'image')} with {count_noun(len(self.labels), 'label')} "
            f"in {self.seconds:.1f}s"
        ) + (f"; top labels: {top}" if top else "")

    def to_dict(self) -> dict[str, Any]:
        out = {
            "images": self.images,
            "labels": self.labels,
            "templates": self.templates,
            "top1_counts": self.top1_counts,
            "seconds": round(self.seconds, 3),
            "scoring": self.scoring,
        }
        return {**out, "note": self.note} if self.note else out


def parse_labels(labels: str | Sequence[str]) -> list[str]:
    """ "cat, dog，car、cat" or a list -> unique non-empty labels in order, by the one rule of
    `clipforge.text.labels.split_labels` (the same as `classify` and the server); a clear error when none."""
    return split_labels(labels, "labels")


def prompted_templates(templates: str | Sequence[str], labels: Sequence[str]) -> str | list[str]:
    """The templates `labels` are prompted with, as a vocabulary records them and `tag` reports them: Chinese
    labels take a set's Chinese twin (`imagenet`, `tag`'s default, -> `zh-imagenet`; `simple` -> `zh-simple`),
    as `ZeroShotClassifier` prompts them (`zeroshot.languages.templates_for_labels`). The record named the set
    as typed, `imagenet`, beside labels prompted in Chinese. Resolving the result again gives it unchanged, so
    the photos an add tags later with the recorded vocabulary are prompted exactly as `tag` prompted."""
    from clipforge.zeroshot.languages import templates_for_labels

    resolved = templates_for_labels(templates if isinstance(templates, str) else list(templates), labels)
    return resolved if isinstance(resolved, str) else list(resolved)  # type: ignore[call-overload]


def tag_templates(templates: str | Sequence[str] | None, labels: Sequence[str], encoder: Encoder) -> Any:
    """The templates a tagging run prompts `labels` with, as prompted (`prompted_templates`), and what to say of
    them: a `zeroshot.prompt_fit.TemplateChoice`. None is the default, ``imagenet`` in the labels' language, given
    way to the largest shipped set of that language that keeps every label in the model's context
    (`prompt_fit.choose_templates`): clipforge-tiny-zh reads 16 tokens, which cut the label out of 126 of the 780
    prompts ``zh-imagenet`` makes for the ten CIFAR-10 labels (71 of 100 CIFAR-10 photos tagged right, 82 with
    ``zh-cifar10``). Templates the caller named are never replaced; their cut prompts are counted and said. One
    rule for `Library.classify` and `MilvusLibrary.classify`, which `clipforge tag` runs."""
    from clipforge.text.families import tokenizer_of
    from clipforge.zeroshot.prompt_fit import TemplateChoice, choose_templates, templates_cut_notice

    model = getattr(encoder, "model", None)  # an encoder of the caller's own may have no CLIP model to read
    tokenizer = tokenizer_of(model) if hasattr(model, "context_length") else None
    name = getattr(encoder, "name", None) or ""
    if templates is None:
        return choose_templates("imagenet", labels, tokenizer, name)
    prompted = prompted_templates(templates, labels)
    cut = templates_cut_notice(prompted, labels, tokenizer, name)[1] if tokenizer is not None else None
    return TemplateChoice(prompted, cut_notice=cut)


def softmax_top_k(
    vectors: np.ndarray, classes: np.ndarray, scale: float, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indices [n, k], probabilities [n, k]) of the k most likely classes under a softmax, highest first."""
    from clipforge.models.scoring import Scoring

    return scored_top_k(vectors, classes, Scoring("softmax", scale), k)


def scored_top_k(
    vectors: np.ndarray, classes: np.ndarray, scoring: Scoring, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(indices [n, k], probabilities [n, k]) of the k most likely classes, highest first (ties by class index),
    scored the model's way (`Encoder.scoring()`): a softmax over the labels, or SigLIP's sigmoid with its bias.

    In row blocks of at most `zeroshot.classifier.SCORE_ELEMENTS` scores (`score_blocks`, as `classify` scores): a
    block of `tag`'s 2,048 photos against 100,000 labels held its probabilities and their argsort whole, ~2.4 GB
    (audit 66 memory). A run that fits is one block, computed as before."""
    from clipforge.zeroshot.classifier import score_blocks

    k = min(k, classes.shape[0])
    top = np.empty((len(vectors), k), dtype=np.int64)
    chosen = np.empty((len(vectors), k), dtype=np.result_type(vectors.dtype, classes.dtype, np.float32))
    for start, stop in score_blocks(len(vectors), classes.shape[0]):
        logits = scoring.scale * (vectors[start:stop] @ classes.T)
        if scoring.sums_to_one:
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
        else:
            probs = 1.0 / (1.0 + np.exp(-(logits + scoring.bias)))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        top[start:stop] = order
        chosen[start:stop] = np.take_along_axis(probs, order, axis=1)
        del logits, probs, order
    return top, chosen


def tag_library(
    store: Store,
    encoder: Encoder,
    labels: Sequence[str],
    templates: str | Sequence[str] | None = None,
    top_k: int = 5,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    chunk: int = 2048,
) -> TagReport:
    """Tag every photo of the library with the `top_k` most likely of `labels`, replacing `encoder`'s tags.
    `templates` None: the default fitted to the model's context (`tag_templates`, said in `TagReport.notices`).

    Written in short transactions of `chunk` photos, so that another process (a server's upload) can write between
    them: SQLite's write lock was held for the whole write (13.6 s for 150,000 photos and 1,000 labels on a loaded
    2-core VM; now at most 0.4 s at a time), and an upload meanwhile got a 503. The
    new tags go under a fresh key (`Transaction.insert_tags`), which no reader asks for; one short transaction
    then tags what was committed meanwhile and switches the vocabulary and the key together
    (`Transaction.switch_tags`); the old rows are deleted after, a chunk at a time. Stopped anywhere (Ctrl-C,
    kill -9), the library answers with one vocabulary's tags - the old before the switch, the new after - and the
    rows left under the other key are deleted by the next run (`_purge`)."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    labels = parse_labels(labels)
    if len(labels) > MAX_LABELS:
        raise ValueError(f"labels: {len(labels)} given, at most {MAX_LABELS} are taken by one tagging run")
    choice = tag_templates(templates, labels, encoder)
    templates = choice.templates  # recorded and reported as prompted ("zh-imagenet")
    classes = encoder.class_embeddings(labels, templates, cache_dir=cache_dir, progress=progress)
    scoring = encoder.scoring()
    model = encoder.fingerprint
    report = TagReport(labels=labels, templates=templates, scoring=scoring.kind,
                       notices=[n for n in (choice.notice, choice.cut_notice) if n])
    current = store.tag_rows(model)
    _purge(store, [key for key in store.tag_row_keys(model) if key != current])  # left by a killed run
    staging = _next_key(model, current)
    total = store.embedding_count(model)

    def write(tx: Any, owners: Sequence[Sequence[int]], top: np.ndarray, probs: np.ndarray) -> None:
        """Insert the scored rows' tags for the photos of each row (`owners`) under the run's key."""
        tx.insert_tags(
            staging,
            [
                (image_id, labels[j], float(p), rank)
                for ids, idx_row, prob_row in zip(owners, top, probs, strict=True)
                for image_id in ids
                for rank, (j, p) in enumerate(zip(idx_row, prob_row, strict=True))
            ],
        )

    with tqdm(total=total, unit="img", desc="tagging", disable=not progress, dynamic_ncols=True) as bar:
        for ids, vectors in store.iter_embeddings(model, chunk=chunk):
            top, probs = scored_top_k(vectors, classes, scoring, top_k)
            with store.transaction() as tx:  # the photos holding these bytes, as committed now
                owners = store.image_ids_for_embeddings(model, int(ids[0]), int(ids[-1]))
                write(tx, [owners.get(eid, ()) for eid in ids.tolist()], top, probs)
            bar.update(len(ids))
    with store.transaction() as tx:
        # Photos committed since their chunk was written (an upload in another process; a file whose bytes
        # changed lost its tags, staged ones included) are scored here, as committed: every photo gets the new tags.
        todo = store.untagged_images(model, key=staging)
        vectors = store.vectors_for_shas(model, sorted({sha for _, sha in todo})) if todo else {}
        todo = [(image_id, sha) for image_id, sha in todo if sha in vectors]
        if todo:
            top, probs = scored_top_k(np.stack([vectors[sha] for _, sha in todo]), classes, scoring, top_k)
            write(tx, [[image_id] for image_id, _ in todo], top, probs)
        vocabulary = {"labels": labels, "templates": report.templates, "top_k": int(top_k)}
        tx.switch_tags(model, staging, json.dumps(vocabulary))
    report.top1_counts = store.tag_counts(model)
    report.images = sum(report.top1_counts.values())
    try:
        _purge(store, [key for key in store.tag_row_keys(model) if key != staging])  # the old tags
    except LibraryWriteError as exc:  # the run's tags are committed and answer: no failure of the run
        report.notices.append(old_tags_kept(exc))
    report.seconds = time.perf_counter() - started
    return report


def old_tags_kept(exc: LibraryWriteError) -> str:
    """The warning for a run whose tags were switched in, after which the disk refused the removal of the old
    tags' rows (full, `ulimit -f`): the store's own sentence says to run the command again, which the run does not
    need (its error, exit status 2, was printed for tags that were saved and answered searches)."""
    what = str(exc).split("; everything saved before")[0]
    return ("warning: the new tags are saved and answer searches; removing the old tags' rows after them was "
            f"refused: {what}. The old rows take space until the next `clipforge tag` removes them: free some "
            "space (or raise the limit) first")


def _next_key(model: str, current: str) -> str:
    """A `tags.model` value for a run's new tags: `<fingerprint>#<n>`, one above the current one's."""
    number = current.removeprefix(model + "#")
    return f"{model}#{int(number) + 1 if current != model and number.isdigit() else 1}"


def _purge(store: Store, keys: Sequence[str]) -> None:
    """Delete the rows under `keys` (no model's current tags), `PURGE_IMAGES` photos' rows per transaction."""
    last = store.last_image_id() if keys else 0
    for key in keys:
        for first in range(0, last + 1, PURGE_IMAGES):
            with store.transaction() as tx:
                tx.delete_tag_rows(key, first, first + PURGE_IMAGES - 1)


def tags_on_add(store: Store) -> bool:
    """Whether an add will tag its new photos: some model's `tag` vocabulary is recorded here.

    `Library` asks before loading a model for an add: only then does the add need the text tower
    (the class embeddings' cache is keyed by it), so otherwise the image tower alone is read."""
    return store.has_meta_prefix(VOCABULARY_KEY)


def tag_vocabulary(store: Store, model: str) -> dict[str, Any] | None:
    """{"labels", "templates", "top_k"} of the library's last `tag` run with `model`, or None.

    The record is read back by every add (which tags its new photos with it), so one edited into something
    else - nested past the JSON decoder's depth, labels that are a number, a million labels, a top_k of "x" -
    is one DamagedLibraryError naming the database, the key and the command that records a good one, never a
    RecursionError or TypeError traceback, nor an add that encodes a million prompts."""
    key = VOCABULARY_KEY + model
    raw = store.get_meta(key)
    data, why = None, None
    if isinstance(raw, str):
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            why = f"{raw!r:.40}, not JSON ({type(exc).__name__})"
    elif raw is not None:
        why = f"{type(raw).__name__} {raw!r:.40}, not JSON text"
    if why is None:
        if data is None or (isinstance(data, dict) and not data.get("labels")):
            return None
        why = _vocabulary_problem(data)
        if why is None:
            data.setdefault("templates", "imagenet")
            data.setdefault("top_k", 5)  # what `tag` kept before the vocabulary recorded it
            return data
    if not isinstance(store, Store):  # a Milvus store's vocabularies (`milvus_tags.Vocabularies`): ignored
        return None
    why = f"its meta key {key!r} holds {why}"
    raise DamagedLibraryError(
        f"library database {display_path(str(store.path))} is damaged ({why}); record the tag vocabulary again "
        'with `clipforge tag --labels "cat, dog, car"` (your labels)'
    )


def _vocabulary_problem(data: Any) -> str | None:
    """What is wrong with a recorded vocabulary, or None when `tag_new_images` can use it."""
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not a tag vocabulary"
    labels, templates, top_k = data["labels"], data.get("templates", "imagenet"), data.get("top_k", 5)
    if not isinstance(labels, list) or not all(isinstance(label, str) and label.strip() for label in labels):
        return "labels that are not a list of words"
    if len(labels) > MAX_LABELS:
        return f"{len(labels)} labels, more than the {MAX_LABELS} `clipforge tag` records"
    if not (
        isinstance(templates, str)
        or (isinstance(templates, list) and templates and all(isinstance(t, str) for t in templates))
    ):
        return "templates that are neither a template set's name nor a list of templates"
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_LABELS:
        return f"a top_k of {top_k!r:.20}, not a whole number from 1 to {MAX_LABELS}"
    return None


def vocabulary_templates(vocabulary: dict[str, Any]) -> str | list[str]:
    """The templates a recorded vocabulary's photos were prompted with, for tagging the photos added later alike.

    A record written before `prompted_templates` named a set with a Chinese twin as typed (`imagenet`) beside
    Chinese labels, which were prompted with that English set: its templates are given written out, a list the
    twin mapping leaves alone (the set name would now be prompted as `zh-imagenet`, and tags of one library
    would mix two prompt sets). `simple` was prompted as `zh-simple` then as now; records since are as prompted."""
    templates = vocabulary["templates"]
    if isinstance(templates, str):
        prompted = prompted_templates(templates, parse_labels(vocabulary["labels"]))
        if prompted != templates and prompted != "zh-simple":
            from clipforge.zeroshot.prompts import get_templates

            return get_templates(templates)
    return templates


def tag_new_images(
    store: Store, encoder: Encoder, cache_dir: str | Path | None = None, chunk: int = 4096
) -> int:
    """Tag the 'ok' images that have no tags yet with the library's vocabulary; returns how many.

    Called after every add; costs one query when nothing is new and nothing when the library was
    never tagged. The class embeddings come from the library's cache, so no prompt is encoded again.
    """
    from clipforge.weights.towers import missing_towers

    model = encoder.fingerprint
    # The key first, then the vocabulary: a `tag` run switching both between the two reads makes the key stale,
    # and the write below then refuses to put the old labels among the new ones (the switch tagged these photos).
    key = store.tag_rows(model)
    vocabulary = tag_vocabulary(store, model)
    if vocabulary is None or "text" in missing_towers(encoder.model):
        return 0  # never tagged; or an add loaded the image tower only (see `tags_on_add`): the next add tags them
    todo = store.untagged_images(model)
    if not todo:
        return 0
    labels = parse_labels(vocabulary["labels"])
    classes = encoder.class_embeddings(
        labels, vocabulary_templates(vocabulary), cache_dir=cache_dir, progress=False
    )
    scoring = encoder.scoring()
    tagged = 0
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        vectors = store.vectors_for_shas(model, sorted({sha for _, sha in part}))
        part = [(image_id, sha) for image_id, sha in part if sha in vectors]
        if not part:
            continue
        top, probs = scored_top_k(
            np.stack([vectors[sha] for _, sha in part]), classes, scoring, int(vocabulary["top_k"])
        )
        rows = [
            (image_id, labels[j], float(p), rank)
            for (image_id, _), idx_row, prob_row in zip(part, top, probs, strict=True)
            for rank, (j, p) in enumerate(zip(idx_row, prob_row, strict=True))
        ]
        with store.transaction() as tx:
            if not tx.replace_tags(model, rows, expected=key):
                break
        tagged += len(part)
    return tagged
