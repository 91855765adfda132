"""Audit 66 (memory), finding 1: `eval retrieval` built the whole images x captions similarity and a whole bool mask
of it (peak ~2.8x the matrix: 10,000 images / 50,000 captions took 5.8 GB). The ranks, `--plot`'s rank lists and
`--predictions`' top captions are now computed one block of rows at a time (`metrics.similarity_blocks`), so memory
is bounded by block x gallery; the numbers must be exactly those of the whole matrix, ties and NaN included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

import clipforge.evaluate.metrics as metrics
import clipforge.evaluate.retrieval_eval as retrieval_eval
from clipforge.evaluate.metrics import retrieval_metrics, retrieval_rank_lists
from clipforge.evaluate.predictions import read_predictions, topk_rows


class TensorShapes(TorchDispatchMode):
    """Records the shape of every tensor an aten op makes (factories, matmuls, comparisons, in-place results)."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out

    def biggest(self, features_dim: int) -> int:
        """The most elements of a tensor made, not counting the features themselves ([n, features_dim] and their
        transposes)."""
        return max(math.prod(s) for s in self.shapes if features_dim not in s)


def _whole_matrix_ranks(img: torch.Tensor, txt: torch.Tensor, t2i: torch.Tensor) -> tuple[list[int], list[int]]:
    """The straightforward computation: the whole similarity, each query's best finite positive (highest score,
    lowest index among equals), counted by the tie rule; the gallery's size when no positive is finite."""
    sim = img @ txt.t()

    def rank(row: torch.Tensor, positives: list[int]) -> int:
        usable = [j for j in positives if math.isfinite(float(row[j]))]
        if not usable:
            return len(row)
        best = max(usable, key=lambda j: (float(row[j]), -j))
        before = torch.arange(len(row)) < best
        return int(((row > row[best]) | ((row == row[best]) & before)).sum())

    i2t = [rank(sim[i], [j for j in range(len(t2i)) if int(t2i[j]) == i]) for i in range(len(img))]
    return i2t, [rank(sim[:, j], [int(t2i[j])]) for j in range(len(t2i))]


def _features(kind: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """53 images with 1 to 7 captions each (217 in all, shuffled), duplicated images and captions (exact ties),
    and for "nan" an image and a caption whose features are NaN. "grid" features are small integers, whose dot
    products are exact in any summation order: ties everywhere; "gauss" ones are normalised normal vectors."""
    g = torch.Generator().manual_seed(seed)
    n_img, dim = 53, 24
    per = torch.randint(1, 8, (n_img,), generator=g)
    t2i = torch.arange(n_img).repeat_interleave(per)
    t2i = t2i[torch.randperm(len(t2i), generator=g)]
    if kind == "grid":
        img = torch.randint(-1, 2, (n_img, dim), generator=g).float()
        txt = torch.randint(-1, 2, (len(t2i), dim), generator=g).float()
    else:
        img = torch.nn.functional.normalize(torch.randn(n_img, dim, generator=g), dim=-1)
        txt = torch.nn.functional.normalize(torch.randn(len(t2i), dim, generator=g), dim=-1)
    img[40], img[41], img[7] = img[3], img[3], img[30]  # duplicate images: every caption of theirs ties
    txt[200], txt[150], txt[9] = txt[5], txt[5], txt[100]  # duplicate captions
    for j in range(len(t2i)):  # some captions are copies of another caption of the same image
        if j % 11 == 0:
            same = (t2i == t2i[j]).nonzero()[:, 0]
            txt[j] = txt[int(same[0])]
    if kind == "nan":
        img[12] = float("nan")
        txt[77] = float("nan")
    return img, txt, t2i


def test_the_fixture_has_exact_ties_at_the_positives():
    """Not vacuous: many best positives tie with another candidate, so the tie rule decides their rank."""
    img, txt, t2i = _features("grid")
    sim = img @ txt.t()
    own = sim[t2i, torch.arange(len(t2i))]
    tied = ((sim.t() == own[:, None]).sum(dim=1) > 1).sum()
    assert int(tied) > 100


@pytest.mark.parametrize("kind", ["grid", "gauss", "nan"])
@pytest.mark.parametrize("chunk", [1, 6, 40, None])  # 53 images and 217 captions: 6 and 40 divide neither
def test_blocked_ranks_equal_the_whole_matrix(kind, chunk):
    img, txt, t2i = _features(kind)
    assert len(txt) == 217
    i2t_ref, t2i_ref = _whole_matrix_ranks(img, txt, t2i)
    i2t, t2i_ranks = retrieval_rank_lists(img, txt, t2i, chunk=chunk)
    assert i2t.tolist() == i2t_ref and t2i_ranks.tolist() == t2i_ref
    m = retrieval_metrics(img, txt, t2i, ks=(1, 5, 10, 300), chunk=chunk)
    for k in (1, 5, 10, 300):
        assert m[f"image_to_text_R@{k}"] == sum(r < min(k, len(txt)) for r in i2t_ref) / len(img)
        assert m[f"text_to_image_R@{k}"] == sum(r < min(k, len(img)) for r in t2i_ref) / len(txt)
    assert (m["num_images"], m["num_texts"]) == (53, 217)
    if kind == "nan":  # the non-finite rule survives the blocks: never a hit
        assert i2t_ref[12] == 217 and t2i_ref[77] == 53
        assert all(t2i_ref[j] == 53 for j in range(len(t2i)) if int(t2i[j]) == 12)


def test_blocked_top_k_equals_the_whole_matrix_top_k():
    """`--predictions`' top captions of each image, ranked block by block: same ids, same scores, ties included."""
    img, txt, _ = _features("grid")
    whole_ids, whole_scores = topk_rows(img @ txt.t(), 10)
    ids, scores = topk_rows((block for _, block in metrics.similarity_blocks(img, txt, chunk=6)), 10)
    assert ids.tolist() == whole_ids.tolist() and scores.tolist() == whole_scores.tolist()
    assert ids.dtype == np.int32 and scores.dtype == np.float32 and ids.shape == (53, 10)


def test_no_images_x_captions_tensor_is_made(monkeypatch):
    """Every tensor the metrics make (besides copies of the features) is at most one block of SCORE_BLOCK scores
    (the default) or chunk x gallery, never the 53 x 217 whole (11,501 scores)."""
    img, txt, t2i = _features("gauss")
    monkeypatch.setattr(metrics, "SCORE_BLOCK", 1000, raising=False)
    with TensorShapes() as seen:
        retrieval_metrics(img, txt, t2i)
    assert seen.biggest(24) <= 1000, sorted(seen.shapes, key=math.prod)[-3:]
    with TensorShapes() as seen:
        retrieval_rank_lists(img, txt, t2i, chunk=3)
    assert seen.biggest(24) <= 3 * 217 and (53, 217) not in seen.shapes and (217, 53) not in seen.shapes


def _torch_allocations(run) -> tuple[int, int]:
    """(peak live bytes, largest single allocation) of what torch allocates on the CPU while `run` runs, the
    temporaries inside an op included (a bool ``sum`` copies its input to int64 first), from the profiler's
    memory events in time order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak, max(e.nbytes() for e in events)


@pytest.mark.parametrize("default", [False, True])
def test_torch_allocates_about_a_block_never_the_matrix(monkeypatch, default):
    """200 images x 1,000 captions (a 800,000-byte matrix; the whole-matrix code peaked at 3.2 MB with a 1.6 MB
    int64 copy of it) in blocks of 5,000 scores: no allocation is larger than one float32 block, and what is
    live at once is a few blocks plus what grows with the images and captions."""
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(200, 8, generator=g), torch.randn(1000, 8, generator=g)
    t2i = torch.arange(1000) % 200
    if default:  # SCORE_BLOCK sizes the blocks: 5 image rows x 1,000 captions, 25 caption rows x 200 images
        monkeypatch.setattr(metrics, "SCORE_BLOCK", 5000, raising=False)
        peak, largest = _torch_allocations(lambda: retrieval_metrics(img, txt, t2i))
    else:
        peak, largest = _torch_allocations(lambda: retrieval_rank_lists(img, txt, t2i, chunk=5))
    block = 5000
    assert largest <= 4 * block
    assert peak <= 12 * block + 64 * (200 + 1000)


def _captions(root):
    """7 images, 13 captions (1 or 2 each); two images are the same colour, so their scores tie."""
    (root / "images").mkdir(parents=True)
    rows = ["image,caption"]
    colours = [(220, 30, 30), (30, 180, 40), (30, 50, 220), (230, 220, 30), (140, 40, 170), (220, 30, 30), (9, 9, 9)]
    for i, rgb in enumerate(colours):
        Image.new("RGB", (24, 24), rgb).save(root / "images" / f"c{i}.png")
        rows += [f"c{i}.png,a photo of colour {i}"] + ([f"c{i}.png,plain square {i}"] if i < 6 else [])
    (root / "captions.csv").write_text("\n".join(rows) + "\n")
    return root / "captions.csv"


def test_eval_retrieval_ranks_once_in_blocks_and_keeps_the_whole_matrix_numbers(tmp_path, monkeypatch):
    """With --plot and --predictions: the rank lists are computed once (the plot reuses them) and block by block,
    the predictions' top captions come from blocks of at most SCORE_BLOCK scores, never the whole 7 x 13, and the
    recalls and top captions are the whole matrix's."""
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(metrics, "SCORE_BLOCK", 20, raising=False)  # blocks of 1 image row, 2 caption rows
    calls, seen, blocks = [], TensorShapes(), []
    real_ranks, real_blocks = metrics.retrieval_rank_lists, getattr(metrics, "similarity_blocks", None)

    def counted(img, txt, t2i, *args, **kwargs):
        calls.append((img.clone(), txt.clone(), t2i.clone()))
        with seen:
            return real_ranks(img, txt, t2i, *args, **kwargs)

    def watched(*args, **kwargs):
        for rows, block in real_blocks(*args, **kwargs):
            blocks.append(tuple(block.shape))
            yield rows, block

    monkeypatch.setattr(metrics, "retrieval_rank_lists", counted)
    monkeypatch.setattr(retrieval_eval, "retrieval_rank_lists", counted, raising=False)
    monkeypatch.setattr(retrieval_eval, "similarity_blocks", watched, raising=False)
    report = retrieval_eval.evaluate_retrieval(
        "clipforge-tiny", _captions(tmp_path / "caps"), out_dir=tmp_path / "out", workers=0, progress=False,
        plot=True, predictions=tmp_path / "preds.parquet", top_k=4)
    assert len(calls) == 1
    img, txt, t2i = calls[0]
    assert (len(img), len(txt)) == (7, 13)
    assert seen.biggest(img.shape[1]) <= 20 and blocks == [(1, 13)] * 7  # the predictions' blocks
    i2t_ref, t2i_ref = _whole_matrix_ranks(img, txt, t2i)
    m = report["metrics"]
    for k in (1, 5, 10):
        assert m[f"image_to_text_R@{k}"] == sum(r < min(k, 13) for r in i2t_ref) / 7
        assert m[f"text_to_image_R@{k}"] == sum(r < min(k, 7) for r in t2i_ref) / 13
    preds = read_predictions(tmp_path / "preds.parquet")
    ids, scores = topk_rows(img @ txt.t(), 4)
    assert preds["topk_ids"] == ids.tolist()
    # the same products, summed by BLAS in another order for a 1-row block (matrix-vector): the last bit may differ
    assert np.allclose(preds["topk_scores"], scores, rtol=1e-6, atol=0)
    assert len(report["files"]["plots"]) == 1 and "plot_error" not in report
