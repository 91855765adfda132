"""Classify image files with free-form labels: the library side of `clipforge classify`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from clipforge.text.labels import TextFileError, parse_json_file, read_text_file, split_labels
from clipforge.zeroshot.classifier import ZeroShotClassifier

__all__ = ["DEFAULT_TEMPLATES", "classify_files", "parse_labels", "plot_classified", "read_labels_file"]

DEFAULT_TEMPLATES = "simple"
"""`classify`'s prompts when none are named: "a photo of a {}." ("一张{}的照片" for Chinese labels), as the web app's."""


def parse_labels(text: str) -> list[str]:
    """``"cat, dog，plane、cat"`` -> ``["cat", "dog", "plane"]``: the value of ``--labels`` by the one rule of
    `clipforge.text.labels.split_labels` (the same as `tag`, search filters and the server)."""
    return split_labels(text, "--labels")


CLASSNAMES_FILE = ("class-names file", "a file of class names (one per line in the dataset's class order, or a JSON "
                   "list of strings)")
"""`read_labels_file`'s words for an evaluation's `--classnames` file, whose refusals name it so."""


def read_labels_file(path: str | Path, what: str = "labels file",
                     expected: str = "a file of labels (one per line, or a JSON list of strings)") -> list[str]:
    """One label per line (blank lines and ``#`` comments skipped) or a JSON list of strings, in UTF-8.

    Lines are kept as they are, repeats included: an evaluation's class-name file maps line i to class i
    (OpenAI's ImageNet names repeat "crane"), so nothing here may drop or merge a line. `what` and `expected`
    name the file's role in refusals (`CLASSNAMES_FILE` for class names).
    """
    text = read_text_file(path, what, expected)
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = parse_json_file(text, path, "a JSON list of label strings")
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise TextFileError(f"{path}: expected a JSON list of label strings")
        labels = data
    else:
        labels = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not labels:
        raise TextFileError(f"{path}: no labels found (expected one label per line)")
    return labels


def classify_files(paths: str | Path | Sequence[str | Path], labels: str | Sequence[str],
                   model: str | torch.nn.Module, templates: str | Sequence[str] | None = None, top_k: int = 5,
                   plot: str | Path | None = None, device: str | None = None, preprocess: Any = None,
                   cache_dir: str | Path | None = None, progress: bool = True, *, precision: str = "fp32",
                   draft: bool = True, batch_size: int = 32, workers: int | None = None,
                   max_pixels: int | None = None) -> dict[str, Any]:
    """Top-k labels for each image file.

    Files go through the one reader and encoder (`clipforge.data.files.encode_files`, model in
    `precision`; `draft=False` decodes every JPEG pixel). Unreadable images do not stop the run:
    they are listed under ``errors`` with the reason. Returns ``{"model", "templates", "precision",
    "draft_decode", "results": [{image, labels, probabilities}], "errors"}``, results in input order, and
    ``notice`` when the labels (else the templates) are in a script the loaded model was not trained for
    (asked of the model itself: a checkpoint path such as ``中文模型.pt`` names no language, the Chinese-CLIP
    it holds does). `templates` None: `DEFAULT_TEMPLATES` in the labels' language, or the largest shipped set
    whose prompts keep every label when the model's context cuts labels out of those
    (`prompt_fit.choose_templates`; ``templates_notice`` then says so). ``cut_notice``: the prompts whose label the
    context cuts, counted once (for a default, by the choice itself). `max_pixels`: the decompression-bomb guard
    (`clipforge.data.files.with_max_pixels`; None keeps the preprocessing's own limit). One path may be given
    as itself, and `labels` as one string of comma-separated labels (`clipforge.zeroshot.inputs`). `top_k`: an int
    of 1 or more (`check_top_k`). The images are scored in blocks (`ZeroShotClassifier.top_k`), each image's top-k
    kept: memory does not grow with images x labels (4,000 photos x 50,000 labels had taken 2.1 GB).
    """
    from clipforge.zeroshot.inputs import class_names

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    labels = class_names(labels, "labels")
    from clipforge.zeroshot.classifier import check_top_k

    top_k = check_top_k(top_k)  # before any model work: 0 had printed no label, -1 was torch's error at the end
    from clipforge.data.files import encode_files, with_max_pixels
    from clipforge.image import Preprocess
    from clipforge.inference.encoder import BatchEncoder
    from clipforge.weights.preprocessing import preprocess_for

    model_name = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        from clipforge.api import load_model

        loaded = load_model(model, device=device)
        model, copy_model, speaker = loaded.model, False, loaded
    else:
        copy_model, speaker = True, model
    if preprocess is None or (not draft and isinstance(preprocess, Preprocess)):
        preprocess = preprocess_for(model, draft=draft)
    preprocess = with_max_pixels(preprocess, max_pixels)  # a copy when it changes the limit
    encoder = BatchEncoder(model, precision, normalizer=preprocess, copy_model=copy_model)
    from clipforge.text.context_cut import same_after_cut
    from clipforge.text.families import tokenizer_of
    from clipforge.zeroshot.prompt_fit import choose_templates, templates_cut_notice

    choice = None
    if templates is None:  # the command's default: one that keeps the labels in the model's context
        choice = choose_templates(DEFAULT_TEMPLATES, labels, tokenizer_of(model), model_name)
        templates = choice.templates
    classifier = ZeroShotClassifier(encoder.model, labels, templates, preprocess=preprocess, device=encoder.device,
                                    cache_dir=cache_dir, progress=progress)
    with tqdm(total=len(paths), unit="image", desc="classify", disable=not progress or len(paths) < 2) as bar:
        encoded = encode_files(paths, encoder, batch_size=batch_size, workers=0 if len(paths) < 8 else workers,
                               preprocess=preprocess, on_batch=bar.update)
    results: list[dict[str, Any]] = []
    if len(encoded.files):  # each image's top-k, scored in blocks: memory does not grow with images x labels
        values, indices = classifier.top_k(torch.from_numpy(encoded.vectors), top_k)
        for item, row, p in zip(encoded.files, indices.tolist(), values.tolist(), strict=True):
            results.append({"image": item.path, "labels": [classifier.classnames[j] for j in row],
                            "probabilities": [round(float(x), 6) for x in p]})
    errors = [{"image": bad.path, "error": bad.reason} for bad in encoded.bad]  # the path once: `skipped P: why`
    out: dict[str, Any] = {"model": model_name, "templates": classifier.templates, "precision": encoder.precision,
                           "draft_decode": bool(getattr(preprocess, "draft", False)), "results": results,
                           "errors": errors, "scoring": getattr(model, "scoring", "softmax")}
    from clipforge.zeroshot.prompts import fill_template, get_templates

    prompts = {name: [fill_template(t, name) for t in classifier.templates] for name in classifier.classnames}
    indistinct = same_after_cut(tokenizer_of(model), prompts)  # labels whose prompts the context cuts alike
    if indistinct:
        out["indistinct"], out["context_length"] = indistinct, int(getattr(model, "context_length", 77))
    from clipforge.zeroshot.languages import query_notice

    if choice is not None and choice.notice:
        out["templates_notice"] = choice.notice
    if choice is not None and get_templates(choice.templates) == classifier.templates:  # counted when chosen
        cut = choice.cut_notice
    else:
        cut = templates_cut_notice(classifier.templates, classifier.classnames, tokenizer_of(model), model_name,
                                   templates)[1]
    if cut:
        out["cut_notice"] = cut
    from clipforge.models.scoring import SIGMOID_NOTE

    if out["scoring"] == "sigmoid":
        out["note"] = SIGMOID_NOTE
    # the labels, else the templates (as `eval zeroshot` asks): "一张{}的照片" around "cat" on an English-only model
    # scored every label alike (50.02% / 49.98%) without a word
    if notice := (query_notice(", ".join(classifier.classnames), speaker, "labels")
                  or query_notice(" ".join(classifier.templates), speaker, "templates")):
        out["notice"] = notice
    if plot is not None and results:
        out["plot"] = plot_classified(results, plot)
    return out


def plot_classified(results: list[dict[str, Any]], plot: str | Path) -> str:
    """The grid of `classify_files`' results (each photo's thumbnail and top labels) written to `plot`; its path.
    Apart from `classify_files` so the CLI can print the results before a plot that fails (a full disk) and not
    lose them, as `similarity` does."""
    from clipforge.image import load_image
    from clipforge.zeroshot.plot import plot_predictions

    shown = []
    for r in results:
        image = load_image(r["image"], draft_size=256)  # a big JPEG at a reduced DCT scale: only a thumbnail
        image.thumbnail((256, 256))
        shown.append(image)
    return str(plot_predictions(shown, [r["labels"] for r in results], [r["probabilities"] for r in results], plot,
                                titles=[Path(r["image"]).name for r in results]))
