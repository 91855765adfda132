"""`eval retrieval`: image<->text recall@k over a caption CSV, CLIP-paper convention.

Images that cannot be decoded are dropped together with their captions (a caption whose
image is not in the gallery can never be retrieved correctly, and would silently lower
text->image recall), and the report counts them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from clipforge.evaluate.common import report_header, resolve_model
from clipforge.evaluate.features import extract_image_features, subset_indices
from clipforge.evaluate.metrics import recall_at_k, retrieval_rank_lists, similarity_blocks
from clipforge.evaluate.report import (
    canonical_expect,
    check_limit,
    check_out_dir,
    check_tolerance,
    claim_run_files,
    finish_report,
    log_skipped,
    peak_memory,
    plot_dir_for,
    reset_peak_memory,
    skipped_files,
    write_plots,
)
from clipforge.evaluate.run_log import open_run_log
from clipforge.inference.encoder import check_finite
from clipforge.models.modes import keeps_caller_mode
from clipforge.zeroshot.embeddings import encode_texts

__all__ = ["evaluate_retrieval"]


@keeps_caller_mode  # an nn.Module runs in eval mode and is given back in the modes it had (`models.modes`)
def evaluate_retrieval(model: str | torch.nn.Module, captions: str | Path | Any, images: str | Path | None = None,
                       *, ks: Sequence[int] = (1, 5, 10), batch_size: int = 64, text_batch_size: int = 256,
                       workers: int = 0, device: str | torch.device | None = None, limit: int | None = None,
                       out_dir: str | Path = "eval_results", expect: Mapping[str, float] | None = None,
                       tolerance: float = 0.3, preprocess: Any = None, model_name: str | None = None,
                       dataset_name: str | None = None, progress: bool = True,
                       precision: str = "fp32", exact_decode: bool = False,
                       plot: bool | str | Path = False, predictions: str | Path | None = None,
                       top_k: int = 10) -> dict[str, Any]:
    """`captions`: a CSV path (``image,caption`` rows, see `clipforge.data.CaptionDataset`), a Karpathy
    split file (``dataset_flickr30k.json``/``dataset_coco.json``: its test split, 5 captions an image) or a
    `CaptionDataset`. `limit`: a fixed random subset of images (with all their captions).
    `plot`: True (into `out_dir`) or a folder: recall@k curves of both directions.
    `predictions`: a Parquet path: per image query its `top_k` caption ids and scores.
    The report's ``captions_cut`` counts the evaluated captions the model's context cuts (``cut_notice`` says it).
    `expect` names, `limit` and the output folders are checked before anything is loaded."""
    from clipforge.data import CaptionDataset

    expect = canonical_expect(expect, "retrieval")
    check_limit(limit)
    check_tolerance(tolerance)
    out_dir = check_out_dir(out_dir)
    plot_dir = plot_dir_for(plot, out_dir)

    ev = resolve_model(model, device, preprocess, model_name, precision=precision, exact_decode=exact_decode)
    if isinstance(captions, CaptionDataset):
        ds = captions
    elif str(captions).lower().endswith(".json"):  # Karpathy's split file (Flickr30k, COCO): its test split
        from clipforge.data.retrieval_sets import open_karpathy_json

        ds = open_karpathy_json(captions, images, "test", ev.preprocess)
    else:
        ds = CaptionDataset(captions, images, ev.preprocess)
    name = dataset_name or Path(getattr(ds, "csv_path", "captions")).parent.name or "captions"
    stem, json_path, log_path = claim_run_files(out_dir, "retrieval", ev.name, name, None)

    with open_run_log(log_path) as log:
        reset_peak_memory(ev.device)
        chosen = subset_indices(len(ds), limit)
        log.info("model %s (%s); %d images, %d captions in %s%s", ev.name, ev.weights, len(ds.images),
                 len(ds.captions), getattr(ds, "csv_path", ""), f" (subset of {limit} images)" if chosen else "")
        result = extract_image_features(ev.model, ds, batch_size=batch_size, workers=workers, device=ev.device,
                                        indices=chosen, progress=progress, desc=f"retrieval {name}")
        # The gallery is the images that decoded; keep exactly their captions, re-indexed.
        gallery = {int(i): pos for pos, i in enumerate(result.indices.tolist())}
        keep = [j for j, img in enumerate(ds.text_to_image) if img in gallery]
        texts = [ds.captions[j] for j in keep]
        considered = len(ds.captions) if chosen is None else sum(len(ds.image_to_text[i]) for i in chosen)
        text_to_image = torch.tensor([gallery[ds.text_to_image[j]] for j in keep], dtype=torch.long)
        from clipforge.evaluate.text_cut import captions_cut

        cut_field, cut_notice = captions_cut(texts, ev.model, ev.name)  # embedded by their beginning only
        if cut_notice:
            log.warning("%s", cut_notice)
        t0 = time.perf_counter()
        text_features = check_finite(encode_texts(ev.model, texts, batch_size=text_batch_size, device=ev.device,
                                                  progress=progress).cpu(), ev.model)  # as the images were
        text_s = time.perf_counter() - t0
        image_features = result.features / result.features.norm(dim=-1, keepdim=True)
        # ranked one block of rows at a time (memory: a block, not images x captions); --plot reuses the ranks
        ranks = retrieval_rank_lists(image_features, text_features, text_to_image)
        metrics = recall_at_k(*ranks, ks=ks)
        log.info("image->text R@1/5/10 %s; text->image %s",
                 [round(100 * metrics[f"image_to_text_R@{k}"], 2) for k in ks],
                 [round(100 * metrics[f"text_to_image_R@{k}"], 2) for k in ks])
        log_skipped(log, result.bad, ds)
        report: dict[str, Any] = {
            **report_header("retrieval", ev.device),
            "model": ev.describe(),
            "dataset": {"name": name, "captions_csv": str(getattr(ds, "csv_path", "")), "images": str(ds.root),
                        "layout": ds.layout,
                        "num_images": len(ds.images), "num_captions": len(ds.captions), "limit": limit,
                        "evaluated_images": metrics["num_images"], "evaluated_captions": metrics["num_texts"],
                        **skipped_files(ds)},
            "convention": "image query hits when any of its captions is in the top k; text query hits when its "
                          "image is in the top k; ties: higher score first, then lower index",
            "captions_cut": cut_field,
            "metrics": metrics,
            "bad_images": {**result.bad, "captions_dropped": considered - len(keep)},
            "timing": {**result.timing, "text_s": round(text_s, 4),
                       "texts_per_s": round(len(texts) / text_s, 3) if text_s > 0 else None},
            "memory": peak_memory(ev.device),
            "files": {"report": str(json_path), "log": str(log_path)},
        }
        if cut_notice:
            report["cut_notice"] = cut_notice
        if predictions is not None:
            from clipforge.evaluate.predictions import write_predictions

            kept = result.indices.tolist()
            report["files"]["predictions"] = str(write_predictions(
                predictions, kept, [ds.images[i] for i in kept], list(range(len(kept))),
                (block for _, block in similarity_blocks(image_features, text_features)), top_k))
        if plot_dir is not None:
            from clipforge.evaluate.plots import plot_recall_curves

            i2t, t2i = ranks
            write_plots(report, log, lambda: [str(plot_recall_curves(i2t, t2i, plot_dir / f"{stem}_recall.png",
                                                                     title=f"{ev.name} on {name}"))])
        finish_report(report, metrics, expect, tolerance, json_path, log)
    return report
