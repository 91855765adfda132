"""Image x text similarity tables and the heatmap from OpenAI's introductory notebook."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from clipforge.atomic import save_figure
from clipforge.data.base import BadImage
from clipforge.figures import pyplot
from clipforge.image import Preprocess, load_image
from clipforge.models import CLIP
from clipforge.models.scoring import scoring_of
from clipforge.text import tokenize_for
from clipforge.text.width import display_width, pad, shorten

TEXT_COLUMNS = 40
"""Terminal columns of a text down the heatmap's side before it is shortened in the middle."""
NAME_COLUMNS = 24
"""Terminal columns of an image's file name along the bottom before it is shortened in the middle."""


@dataclass
class SimilarityTable:
    image_names: list[str]
    texts: list[str]
    cosine: torch.Tensor  # [images, texts]
    probabilities: torch.Tensor  # softmax over texts, per image (sigmoid per pair for SigLIP)
    note: str | None = None  # sigmoid models: "probabilities do not sum to 1"
    image_paths: list[str] = field(default_factory=list)  # the rows' images (the readable ones)
    skipped: list[BadImage] = field(default_factory=list)  # images that could not be read, with why

    def format(self, shown: Callable[[str], str] = str) -> str:
        """The table as text, each image name and text through `shown`: the CLI passes its escaping of names
        (`cli.common.one_line`), as `search` prints paths; a file named ``a\\nb.jpg`` printed its tail as a row."""
        texts, names = [shown(t) for t in self.texts], [shown(n) for n in self.image_names]
        # padded by terminal columns, not characters: a Chinese text or file name takes two per character
        width = max(12, *(display_width(t) for t in texts)) if texts else 12
        name_width = max([5, *(display_width(n) for n in names)])  # no row (every image unreadable): the header
        lines = [" " * name_width + "  " + "  ".join(pad(t, width, ">") for t in texts)]
        for name, row in zip(names, self.probabilities.tolist(), strict=True):
            lines.append(pad(name, name_width) + "  " + "  ".join(f"{p:>{width}.4f}" for p in row))
        if self.note:
            lines.append(f"note: {self.note}")
        return "\n".join(lines)


def compute_similarity(model: CLIP, preprocess: Preprocess, image_paths: Sequence[str | Path],
                       texts: Sequence[str], *, precision: str = "fp32") -> SimilarityTable:
    """Cosine similarities and the per-image softmax over texts at the model's own logit scale.

    Images go through the one reader and encoder (`clipforge.data.files.encode_files`; `preprocess`
    decides draft decoding) with the model in `precision` (bf16 on a copy). Unreadable images are
    skipped and listed in `skipped`, as `classify` and `index add` skip them (a folder with one bad
    file failed whole); when none could be read the table has no rows and `skipped` lists every file with its
    reason, as `classify_files` returns no results and every error (an `ImageLoadError` named the first only, and
    the CLI could print neither the others nor its --json). A logit scale or bias that is
    not finite is `NonFiniteModelError`, as in `classify` (`zeroshot.classifier.check_scoring`).
    """
    from clipforge.data.files import encode_files
    from clipforge.inference.encoder import BatchEncoder
    from clipforge.zeroshot.classifier import check_scoring

    if not image_paths or not texts:
        raise ValueError("need at least one image and one text")
    scoring = scoring_of(model)  # softmax over the texts, or SigLIP's independent sigmoids
    # a scale or bias that is not finite makes every score NaN (a table of nan, exit 0): refused as `classify`
    # refuses it, before any image is read
    check_scoring(model, scoring.scale, None if scoring.sums_to_one else scoring.bias)
    encoder = BatchEncoder(model, precision, normalizer=preprocess, copy_model=True)
    encoded = encode_files(image_paths, encoder, workers=0, preprocess=preprocess)
    if encoded.bad and len(encoded.bad) == len(image_paths):  # no row: the caller says so, naming every file
        empty = torch.zeros(0, len(texts))
        return SimilarityTable([], list(texts), empty, empty.clone(), scoring.note, [], list(encoded.bad))
    readable = [str(p) for p in encoded.paths]  # the order of `encoded.vectors`
    tokens = tokenize_for(model, list(texts))  # the model's own tokenizer (BPE, SentencePiece, ...)
    image_features = torch.from_numpy(encoded.vectors)
    text_features = torch.from_numpy(encoder.texts(tokens))
    cosine = image_features @ text_features.T
    probabilities = scoring.probabilities(scoring.scale * cosine + scoring.bias)
    return SimilarityTable([Path(p).name for p in readable], list(texts), cosine, probabilities, scoring.note,
                           readable, list(encoded.bad))


def plot_similarity(table: SimilarityTable, image_paths: Sequence[str | Path] | None, out: str | Path) -> Path:
    """Texts down the side, image thumbnails along the top, cosine similarity in each cell.

    Texts and file names in any script: drawn with an installed CJK font where they need one, else as
    ``#<index>`` (texts first, then the images) with a notice in the figure (`zeroshot.fonts`). A file name whose
    bytes are not UTF-8 is drawn as the table prints it (``bad_\\xff.jpg``, `display_path`): its undecodable bytes
    are no script, so no font draws them, and it was drawn as ``#<index>`` with advice to install a CJK font.
    """
    if not table.image_names:  # every image unreadable: an empty heatmap said nothing (and matplotlib warned)
        raise ValueError(f"no image could be read ({len(table.skipped)} skipped): no heatmap to draw")
    plt = pyplot()
    from clipforge.library.dbfile import display_path  # the table's spelling of a name that is not UTF-8
    from clipforge.zeroshot.fonts import drawn_labels, mark_figure

    image_paths = table.image_paths or list(image_paths or [])  # the rows' images: unreadable ones skipped

    n_images, n_texts = table.cosine.shape
    # long captions and camera file names would squeeze the heatmap (or run off the figure): shortened in the middle
    labels = [shorten(t, TEXT_COLUMNS) for t in table.texts] + [shorten(display_path(n), NAME_COLUMNS)
                                                                for n in table.image_names]
    with drawn_labels(labels) as style:
        texts, names = style.labels[:n_texts], style.labels[n_texts:]
        fig, ax = plt.subplots(figsize=(2 + 1.6 * n_images, 2.5 + 0.6 * n_texts))
        matrix = table.cosine.T.numpy()
        ax.imshow(matrix, cmap="viridis", aspect="auto")
        ax.set_yticks(range(n_texts), labels=texts, fontsize=10)
        ax.set_xticks(range(n_images), labels=names, rotation=30, ha="right", fontsize=8)
        for t in range(n_texts):
            for i in range(n_images):
                ax.text(i, t, f"{matrix[t, i]:.2f}", ha="center", va="center", fontsize=9, color="white")
        for i, path in enumerate(image_paths):
            thumb = load_image(path, draft_size=128)  # a big JPEG at a reduced DCT scale: only a thumbnail
            thumb.thumbnail((128, 128))
            ax.imshow(thumb, extent=(i - 0.45, i + 0.45, -0.6, -1.6), origin="upper")
        ax.set_ylim(n_texts - 0.5, -1.7)
        ax.set_xlim(-0.5, n_images - 0.5)
        ax.set_title("Cosine similarity between text and image features")
        return save_figure(fig, out, dpi=110, finish=lambda f: mark_figure(f, style))
