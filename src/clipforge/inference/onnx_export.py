"""Export the two towers to ONNX and run them with onnxruntime.

Layout written by `export_onnx(model, out_dir)`:

    out_dir/image_encoder.onnx   pixel_values float32 [batch, 3, R, R]
                                   -> image_features [batch, D] (raw, as `encode_image`)
                                   -> image_embeds [batch, D]   (L2-normalised, as HF's `image_embeds`)
    out_dir/text_encoder.onnx    input_ids int64 [batch, sequence <= context_length] ([batch, context_length]
                                 for a tower that attends to its padding: SigLIP)
                                   -> text_features [batch, D] (raw, as `encode_text`)
                                   -> text_embeds [batch, D]   (L2-normalised, as HF's `text_embeds`)
    out_dir/clipforge_onnx.json  shapes, opset, names, the parity measured at export time, and what using the
                                 graphs needs (`onnx_usage`): ``preprocessing`` (size, resize mode, interpolation,
                                 mean/std), ``scoring`` (softmax or sigmoid, scale, bias), ``tokenizer`` (kind,
                                 context length, ids, file)
    out_dir/<tokenizer file>     a model family's own tokenizer file (``spiece.model``, ``tokenizer.json``,
                                 Chinese-CLIP's ``bert_chinese_vocab.txt``), when the model has one
    out_dir/<graph>.onnx.data    a graph's tensors, for a graph over 2 GB (the JSON's ``external_data``, its size
                                 ``external_data_bytes``)

Output names keep one meaning each: HF's names (``image_embeds``/``text_embeds``) are normalised,
as in `transformers`; raw features have their own names. Batch and sequence axes are dynamic:
token rows may be cut after the batch's last EOT (``<|endoftext|>``, the highest id), as
`CLIP.encode_text` does internally, or padded to the full 77. The EOT gather is inside the graph.
Except where the tower attends to its padding (SigLIP: no mask, read at the last position): a shorter row gave
other features silently, so that graph's sequence axis is fixed to the context (the JSON's shape says so).
Chinese-CLIP's BERT tower masks its padding (id 0) inside the graph and reads [CLS], as `ChineseCLIP.encode_text`.
Token ids are int64 in the graph, in the model's own tokenizer's vocabulary (the JSON's ``tokenizer``: OpenAI's
BPE, `clipforge.tokenize`, for OpenAI-style models; SigLIP's SentencePiece ids, padded to the full context, for
SigLIP); `OnnxCLIP.encode_text` casts int32 (or any integer) ids and refuses anything else with a clear error,
and takes rows longer than the model's context (what `clipforge.tokenize` returns: 77 ids) when every prompt
ends within it, as `CLIP.encode_text` does.

`OnnxCLIP` lives here: ``from clipforge.inference import OnnxCLIP`` (or
``clipforge.inference.onnx_export.OnnxCLIP``); `clipforge export onnx --out DIR` writes what it reads.

The export uses torch's TorchScript-based exporter (`dynamo=False`): the newer exporter needs
the `onnxscript` package, and this one handles these two plain graphs fine.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clipforge.inference.precision import is_prepared

__all__ = ["IMAGE_FILE", "META_FILE", "PARITY_ATOL", "PARITY_RTOL", "TEXT_FILE", "ImageTower", "OnnxCLIP",
           "TextTower", "export_onnx", "onnx_parity", "parity_failures"]

IMAGE_FILE = "image_encoder.onnx"
TEXT_FILE = "text_encoder.onnx"
META_FILE = "clipforge_onnx.json"
DEFAULT_OPSET = 17
PARITY_RTOL = 1e-4
"""How far (relative to the output's largest |value|) an exported output may be from PyTorch's: see
`parity_failures`."""
PARITY_ATOL = 1e-6
"""Added to the relative bound, for an output that is (nearly) all zeros."""
_OUTPUTS = (("image", "image_features"), ("image_embeds", "image_embeds"), ("text", "text_features"),
            ("text_embeds", "text_embeds"))
"""(parity key prefix, graph output name) of every output the parity check compares."""


def _both(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return features, features / features.norm(dim=-1, keepdim=True)


class ImageTower(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _both(self.visual(pixel_values))


class TextTower(nn.Module):
    """The text tower over the whole context, reading each row's feature at its EOT token."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.bert = getattr(model, "bert", None)  # Chinese-CLIP (`models.chinese_clip`): BERT read at [CLS]
        if self.bert is not None:
            self.pad_id, self.text_projection = int(model.pad_id), model.text_projection
            return
        self.hf_text = getattr(model, "text", None)  # a transformers encoder tower (`models.family_hf`): whole
        self.token_embedding = model.token_embedding
        self.positional_embedding = model.positional_embedding
        self.transformer = model.transformer
        self.ln_final = model.ln_final
        self.text_projection = model.text_projection
        # model families (SigLIP, MetaCLIP 2): their own pooling position and projection
        self.pool = getattr(model, "text_pool_positions", None)
        self.project = getattr(model, "_project_text", None)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.bert is not None:
            # `ChineseCLIP.encode_text`: padding masked, features at [CLS] (position 0), then the projection. It
            # also drops all-padding trailing columns first; masked columns change nothing, so the graph keeps them
            mask = input_ids.ne(self.pad_id).to(self.text_projection.dtype)
            hidden = self.bert(input_ids=input_ids, attention_mask=mask).last_hidden_state
            return _both(hidden[:, 0, :] @ self.text_projection)
        if self.hf_text is not None:
            return _both(self.hf_text(input_ids))
        x = self.token_embedding(input_ids) + self.positional_embedding[: input_ids.shape[1]]
        x = self.ln_final(self.transformer(x))
        if self.pool is not None and self.project is not None:
            index = self.pool(input_ids).view(-1, 1, 1).expand(-1, 1, x.shape[-1])
            return _both(self.project(torch.gather(x, 1, index).squeeze(1)))
        eot = input_ids.argmax(dim=-1)  # EOT has the highest id in the vocabulary
        index = eot.view(-1, 1, 1).expand(-1, 1, x.shape[-1])
        return _both(torch.gather(x, 1, index).squeeze(1) @ self.text_projection)


def _family_ids(model: nn.Module, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Example ids in a model family's vocabulary, its end token placed at different positions."""
    context, vocab = int(model.context_length), int(model.vocab_size)
    tokens = torch.randint(3, vocab, (batch, context), generator=generator)
    eos = getattr(model, "text_eos_id", None)
    pad = getattr(model, "pad_id", None) if getattr(model, "bert", None) is not None else None
    for row in range(batch):
        end = min(context - 1, 3 + 5 * row)
        if eos is not None:
            tokens[row, end] = int(eos)
        if pad is not None:  # Chinese-CLIP: rows padded after their [SEP], so the padding mask is exercised
            tokens[row, end + 1:] = int(pad)
    return tokens


def _plain_fp32(model: nn.Module) -> nn.Module:
    """The model as a plain fp32 CLIP: oneDNN's packed kernels (`prepare`, and the fast forward
    `clipforge.load` gives every model) are not exportable."""
    swapped = any(type(m).__module__.startswith("clipforge.inference") for m in model.modules())
    if not swapped and not is_prepared(model) and all(
            p.dtype == torch.float32 for p in model.parameters() if p.is_floating_point()):
        return model
    from clipforge.models import build_model
    from clipforge.weights.save import model_config

    state = {k: v.detach().float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    return build_model(state, config=model_config(model))  # the config keeps the activation


def _export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, outputs: tuple[str, str],
            opset: int, dynamic: dict[int, str]) -> None:
    # The exporter restores the wrapper's training flag afterwards, recursively: a wrapper left
    # in (default) training mode would switch the caller's model to training mode, and the next
    # ResNet forward would then update BatchNorm statistics.
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notices
        torch.onnx.export(
            module, (example,), str(path), dynamo=False, opset_version=opset,
            input_names=[input_name], output_names=list(outputs),
            dynamic_axes={input_name: dynamic, **{name: {0: "batch"} for name in outputs}},
            do_constant_folding=True)


@torch.inference_mode()
def _check_finite(plain: nn.Module, model: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> None:
    """Every command's NaN line (`encoder.check_finite`) for towers whose features of the export's examples are not
    finite: the parity check said "differs from PyTorch by nan" in a traceback, and --no-verify wrote NaN graphs."""
    from clipforge.inference.encoder import check_finite

    check_finite(plain.encode_image(images), model)
    check_finite(plain.encode_text(tokens), model)


def _naming(out_dir: Path, file: str) -> Any:
    """A full disk while writing `file` (into the staging folder) as one line naming it as it would lie in
    `out_dir`: "[Errno 27] File too large" named no file and said nothing of what to do."""
    from clipforge.disk_full import naming_full_disk

    return naming_full_disk(out_dir / file, kept=f"nothing was written to {out_dir}")


def export_onnx(model: Any, out_dir: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
                verify: bool = True, name: str | None = None) -> dict[str, Any]:
    """Write image and text encoders to `out_dir` (see module docstring); returns the metadata.

    `model`: a `LoadedModel` (`clipforge.api.load_model`, what `export onnx` passes: its preprocessing, tokenizer
    and scoring go into the metadata as the commands use them) or a bare CLIP module (they are then read from the
    module as `load_model` reads them).

    Files appear atomically: everything is written to a staging folder inside `out_dir` in the final layout and
    moved in at the end (`onnx_files`: staging folders of dead exports are removed first, a >2 GB graph's tensors
    go in one ``.data`` file moved with it, files an earlier export of ours wrote and this one does not are
    removed, each said on stderr, and anything else an earlier JSON names is kept, with a notice). With `verify`,
    both graphs are run through onnxruntime on random inputs, the differences from PyTorch are recorded
    (`onnx_parity`) and each output must be within `PARITY_RTOL` of its largest value (`parity_failures`), or
    nothing is written. A model whose weights hold NaN or inf is `NonFiniteModelError` first (`_check_finite`).
    """
    from clipforge.inference.onnx_files import (
        listed_files,
        make_staging,
        remove_stale_staging,
        remove_unlisted,
        single_data_file,
    )
    from clipforge.inference.onnx_usage import full_context_only, usage_meta

    module = model if isinstance(model, nn.Module) else model.model
    usage, tokenizer = usage_meta(model, module)  # preprocessing, scoring, tokenizer; its file to copy
    out_dir = Path(out_dir)
    plain = _plain_fp32(module).eval()
    resolution = int(plain.visual.input_resolution)
    context = int(plain.context_length)
    tokens = torch.zeros(2, context, dtype=torch.long)
    tokens[:, 0], tokens[:, 1:4], tokens[:, 4] = 49406, 320, 49407
    if int(plain.vocab_size) != 49408:  # a model family's own vocabulary (SigLIP, MetaCLIP 2, Chinese-CLIP)
        tokens = _family_ids(plain, 2, torch.Generator().manual_seed(0))
    images = torch.randn(2, 3, resolution, resolution)
    _check_finite(plain, module, images, tokens)  # before anything is written, with or without `verify`
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)  # what hard-killed exports left (`onnx_files`)
    # a tower that attends to its padding (SigLIP) gives other features on shorter rows: its sequence axis is fixed
    fixed = full_context_only(plain)
    meta: dict[str, Any] = {
        "format": "clipforge-onnx-2", "model": name, "opset": opset,
        "image": {"file": IMAGE_FILE, "input": "pixel_values", "output": "image_features",
                  "normalized_output": "image_embeds", "shape": ["batch", 3, resolution, resolution]},
        "text": {"file": TEXT_FILE, "input": "input_ids", "output": "text_features",
                 "normalized_output": "text_embeds", "dtype": "int64",
                 "shape": ["batch", context if fixed else f"sequence<={context}"]},
        "embed_dim": int(plain.embed_dim), "image_resolution": resolution, "context_length": context,
        "activation": str(getattr(plain, "activation", "quick_gelu")), **usage,
    }
    staging = make_staging(out_dir)
    try:
        files = []
        towers = (("image", IMAGE_FILE, ImageTower(plain), images, "pixel_values",
                   ("image_features", "image_embeds"), {0: "batch"}),
                  ("text", TEXT_FILE, TextTower(plain), tokens, "input_ids", ("text_features", "text_embeds"),
                   {0: "batch"} if fixed else {0: "batch", 1: "sequence"}))
        for tower, file, wrapper, example, input_name, outputs, dynamic in towers:
            (staging / tower).mkdir()  # a folder each: torch's weight files of a >2 GB graph are named by tensor
            with _naming(out_dir, file):
                _export(wrapper, example, staging / tower / file, input_name, outputs, opset, dynamic)
                data = single_data_file(staging / tower / file, staging / file)
            if data is not None:  # its size recorded: a later export into this folder removes it only unchanged
                meta[tower]["external_data"] = data
                meta[tower]["external_data_bytes"] = (staging / data).stat().st_size
                files.append(data)
            shutil.rmtree(staging / tower)
        files += [IMAGE_FILE, TEXT_FILE]
        with _naming(out_dir, META_FILE):
            (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        if verify:  # on the final layout: the graphs and their data files as they will lie in `out_dir`
            meta["parity"] = onnx_parity(plain, staging, named=module)
            failures = parity_failures(meta["parity"])
            if failures:
                raise RuntimeError(f"ONNX export of {name or 'model'} differs from PyTorch: {'; '.join(failures)} "
                                   f"(allowed: {PARITY_RTOL:.0e} x the output's largest |value| + {PARITY_ATOL:.0e}); "
                                   f"nothing was written")
        if tokenizer is not None:  # the model family's own file, beside the graphs that take its ids
            with _naming(out_dir, tokenizer.name):
                shutil.copyfile(tokenizer, staging / tokenizer.name)
            files.append(tokenizer.name)
        with _naming(out_dir, META_FILE):
            (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        files.append(META_FILE)
        previous = listed_files(out_dir, META_FILE, {"image": IMAGE_FILE, "text": TEXT_FILE})
        for file in files:  # data files before their graphs, the JSON last
            os.replace(staging / file, out_dir / file)
        # e.g. a SigLIP's spiece.model under clipforge-tiny's graphs; only files an export of ours wrote, each said
        remove_unlisted(out_dir, previous, files, META_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


class OnnxCLIP:
    """The exported towers behind `encode_image` / `encode_text`, on onnxruntime's CPU provider."""

    def __init__(self, directory: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{directory} holds no {META_FILE}; expected the output of "
                                    "`clipforge export onnx --out DIR`")
        self.meta = json.loads(meta_path.read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sessions = {}
        for tower in ("image", "text"):
            path = directory / self.meta[tower]["file"]
            if not path.is_file():
                raise FileNotFoundError(f"missing {path} (listed in {meta_path})")
            self.sessions[tower] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _run(self, tower: str, array: np.ndarray, normalize: bool) -> np.ndarray:
        spec = self.meta[tower]
        output = spec.get("normalized_output") if normalize else spec["output"]
        if output is None:
            raise ValueError(f"{self.meta[tower]['file']} was exported without normalised outputs; re-export it")
        if not array.shape[0]:
            # An empty batch is answered here: the graphs take one (their reshapes name every size), but
            # onnxruntime's own graph optimisation (reshape fusion) rewrites a [batch, C, H * W] reshape into
            # [0, C, -1], and -1 cannot be inferred from 0 elements.
            return np.zeros((0, int(self.meta["embed_dim"])), dtype=np.float32)
        return self.sessions[tower].run([output], {spec["input"]: array})[0]

    def encode_image(self, pixel_values: torch.Tensor | np.ndarray, normalize: bool = False) -> np.ndarray:
        array = pixel_values.detach().cpu().numpy() if isinstance(pixel_values, torch.Tensor) else pixel_values
        return self._run("image", np.ascontiguousarray(array, dtype=np.float32), normalize)

    def encode_text(self, input_ids: torch.Tensor | np.ndarray, normalize: bool = False) -> np.ndarray:
        """Token ids of any integer dtype (int32 included) -> features; other dtypes are refused."""
        array = input_ids.detach().cpu().numpy() if isinstance(input_ids, torch.Tensor) else np.asarray(input_ids)
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"token ids must be integers (int64 or int32), got {array.dtype}")
        context = int(self.meta["context_length"])
        if array.ndim != 2 or array.shape[1] < 1:
            raise ValueError(f"token ids must be shaped [batch, sequence], got {array.shape}")
        if isinstance(self.meta["text"]["shape"][1], int) and array.shape[1] < context:
            raise ValueError(f"token rows are {array.shape[1]} ids long; this model's text graph takes exactly "
                             f"{context} (rows padded to the full context: its tower attends to the padding)")
        if array.shape[1] > context:  # e.g. clipforge.tokenize's 77 ids for a 16-token model: keep what is used
            used = _used_columns(array, self.meta.get("tokenizer", {}).get("pad_id"))
            if used > context:
                raise ValueError(f"a prompt is {used} tokens long but this model reads at most {context}; "
                                 f"tokenize with context_length={context} (truncate=True to cut it)")
            array = array[:, :context]
        return self._run("text", np.ascontiguousarray(array, dtype=np.int64), normalize)


def _used_columns(array: np.ndarray, pad_id: Any) -> int:
    """How many leading columns of the id rows hold more than padding: through the last id that is not `pad_id`
    in any row. Without a recorded pad id (an export before the JSON carried one): through the batch's highest id,
    OpenAI's end token; the highest id marks no end in other vocabularies (a WordPiece [SEP] is 102)."""
    if pad_id is None:
        return int(array.argmax(axis=1).max()) + 1
    columns = np.flatnonzero((array != int(pad_id)).any(axis=0))
    return int(columns[-1]) + 1 if columns.size else 0


@torch.inference_mode()
def onnx_parity(model: nn.Module, directory: str | os.PathLike, batch: int = 3, seed: int = 0,
                named: nn.Module | None = None) -> dict[str, float]:
    """How far the ONNX graphs in `directory` are from `model` (fp32) on random inputs, for every output: the
    largest absolute difference (``<prefix>_max_abs_diff``), that difference over the output's largest |value|
    (``<prefix>_max_rel_diff``) and that value (``<prefix>_scale``), where the prefixes are ``image`` and ``text``
    (the raw features) and ``image_embeds`` and ``text_embeds`` (the L2-normalised outputs). Features of `model`
    that are not finite are the NaN line naming `named` (the loaded model; default `model`)."""
    generator = torch.Generator().manual_seed(seed)
    plain = _plain_fp32(model).eval()
    resolution, context = int(plain.visual.input_resolution), int(plain.context_length)
    images = torch.randn(batch, 3, resolution, resolution, generator=generator)
    tokens = torch.zeros(batch, context, dtype=torch.long)
    for row in range(batch):  # prompts of different lengths, so the EOT gather is exercised
        length = 3 + 5 * row
        tokens[row, 0] = 49406
        tokens[row, 1:length] = torch.randint(1, 49000, (length - 1,), generator=generator)
        tokens[row, length] = 49407
    if int(plain.vocab_size) != 49408:
        tokens = _family_ids(plain, batch, generator)
    runner = OnnxCLIP(directory, threads=1)
    from clipforge.inference.encoder import check_finite

    # the NaN line, not "differs from PyTorch by nan": NaN rows of a token embedding the export's examples missed
    want_image = check_finite(plain.encode_image(images), named or model).numpy()
    want_text = check_finite(plain.encode_text(tokens), named or model).numpy()
    pairs = {
        "image": (runner.encode_image(images), want_image),
        "image_embeds": (runner.encode_image(images, normalize=True), _unit(want_image)),
        "text": (runner.encode_text(tokens), want_text),
        "text_embeds": (runner.encode_text(tokens, normalize=True), _unit(want_text)),
    }
    out: dict[str, float] = {}
    for prefix, (got, want) in pairs.items():
        diff, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
        out |= {f"{prefix}_max_abs_diff": diff, f"{prefix}_max_rel_diff": diff / max(scale, 1e-12),
                f"{prefix}_scale": scale}
    return out | {"batch": batch}


def _unit(features: np.ndarray) -> np.ndarray:
    return features / np.linalg.norm(features, axis=-1, keepdims=True)


def parity_failures(parity: dict[str, float]) -> list[str]:
    """The outputs of an `onnx_parity` result further from PyTorch than ``PARITY_RTOL * scale + PARITY_ATOL``
    (scale: the output's largest |value|), each as one phrase; empty when the export is sound.

    Why relative: float32 round-off grows with the size of the numbers. A fixed bound of 1e-4 passed
    clipforge-tiny's image features (largest value ~171) at 7.6e-05, while they were only 4.5e-07 of their
    size apart: a CPU whose kernels sum in another order (AVX2 against AVX-512, oneDNN against MLAS) could
    have failed a sound export. Measured on an AVX-512 Xeon, a sound export is 2e-07 to 1.1e-06 of its
    outputs' size off (clipforge-tiny, test-vit-tiny, test-rn-tiny, random ViT-B/32 and RN50): ~100x inside
    1e-4. Export bugs injected into clipforge-tiny and test-vit-tiny are ~100x outside or more: GELU traced
    for QuickGELU 8.6e-03 to 1.3e-02, ln_final left out 0.28 to 3.7, ln_post left out 0.23, a ResNet's
    BatchNorm traced in training mode 0.96, the EOT read one token early or at position 0 0.5 to 1.3.
    The normalised outputs are checked too: a norm taken over the wrong axis inside the graph (1.9 to 5.6
    off) leaves the raw features intact, and the check of the raw features alone passed it.
    """
    failures = []
    for prefix, output in _OUTPUTS:
        key = f"{prefix}_max_abs_diff"
        if key not in parity:  # a record of an older export (raw features only)
            continue
        diff, scale = float(parity[key]), float(parity.get(f"{prefix}_scale", 0.0))
        limit = PARITY_RTOL * scale + PARITY_ATOL
        if not diff <= limit:  # NaN fails too
            failures.append(f"{output} by {diff:.2e}, over the {limit:.1e} allowed for values up to {scale:.3g}")
    return failures
