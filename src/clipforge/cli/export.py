"""`clipforge export onnx --model M --out DIR`: the image and text towers as ONNX graphs."""

from __future__ import annotations

import argparse
import os

from clipforge.cli.common import add_model_argument

DEFAULT_OPSET = 17  # clipforge.inference.onnx_export.DEFAULT_OPSET (not imported: it loads torch for --help)
PARITY_RULE = "1e-4 x each output's largest |value|"
"""`onnx_export.parity_failures`' rule (PARITY_RTOL) in words: relative, since float32 round-off grows with the
numbers (clipforge-tiny's image features, up to ~171, differ by 7.6e-05 while only 4.5e-07 of their size)."""
MIN_OPSET = 14
"""The lowest opset the towers export at: their attention (`scaled_dot_product_attention`) exports from 14, in
every family (ViT, ResNet, SigLIP, the transformers text towers); below it torch raises UnsupportedOperatorError."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a model to another runtime's format (ONNX)",
                                   description="Export a model's towers to another runtime's format.")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT")
    onnx = formats.add_parser(
        "onnx", help="write image_encoder.onnx and text_encoder.onnx (dynamic batch and sequence axes), "
                     "checked against PyTorch with onnxruntime",
        description="Write image_encoder.onnx and text_encoder.onnx: outputs image_embeds/text_embeds are "
                    "L2-normalised (as Hugging Face's of those names), image_features/text_features the raw "
                    "encode_image/encode_text values; batch and sequence axes are dynamic (the sequence axis is fixed to "
                    "the context for a text tower that attends to its padding: SigLIP); token ids int64. "
                    f"Checked against PyTorch with onnxruntime (max |diff| <= {PARITY_RULE}).")
    add_model_argument(onnx)
    onnx.add_argument("--out", required=True, help="output folder (created if missing; files of an earlier export "
                                                   "in it are replaced)")
    onnx.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                      help=f"ONNX opset: {MIN_OPSET} up to the newest this torch writes (default {DEFAULT_OPSET})")
    onnx.add_argument("--no-verify", action="store_true",
                      help=f"skip the onnxruntime parity check (max |diff| <= {PARITY_RULE})")
    onnx.set_defaults(func=run_onnx)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def max_opset() -> int:
    """The newest opset torch's exporter writes: `torch.onnx._constants.ONNX_MAX_OPSET` (23 with torch 2.13; each
    of 14 to 23 exports every test model and passes the onnxruntime parity check), or the default 17, which
    every torch this project supports writes, where that private name is missing."""
    try:
        from torch.onnx import _constants
    except ImportError:
        return DEFAULT_OPSET
    return int(getattr(_constants, "ONNX_MAX_OPSET", DEFAULT_OPSET))


def check_opset(opset: int) -> None:
    """One line for an opset the export cannot write, before the model loads: torch's traceback
    (UnsupportedOperatorError below 14, "Unsupported onnx_opset_version" above its newest) came after it."""
    newest = max_opset()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"--opset {opset}: expected {MIN_OPSET} to {newest} (the towers' attention exports from "
                         f"opset {MIN_OPSET}; this torch writes at most {newest})")


def check_out_folder(out: str) -> list[str]:
    """One line for an `--out` that cannot be the export's folder (a file, or a file in its path); returns the
    folders the export will create (outermost last), so a failed export can remove them again."""
    missing: list[str] = []
    folder = os.path.abspath(out)
    while not os.path.lexists(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    if not os.path.isdir(folder):
        if not missing:
            raise ValueError(f"--out {out}: is a file; expected a folder (created if missing) for image_encoder.onnx, "
                             "text_encoder.onnx and clipforge_onnx.json")
        raise ValueError(f"--out {out}: {folder} is a file, not a folder; expected a folder (created if missing)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: folder {folder} is not writable")
    return missing


def run_onnx(args: argparse.Namespace) -> int:
    from clipforge.cli.common import load_cli_model

    check_opset(args.opset)  # both before the model loads: a mistake costs one line, not a model and a traceback
    created = check_out_folder(args.out)
    try:
        os.makedirs(args.out, exist_ok=True)  # before the model loads: /proc/x, a read-only mount say so in one line
    except OSError as exc:
        _remove_created(created)
        raise ValueError(f"--out {args.out}: cannot create folder {exc.filename or args.out} ({exc.strerror}); "
                         "expected a folder this user can create and write") from None
    try:
        # the LoadedModel: its preprocessing, tokenizer and scoring go into clipforge_onnx.json as every command
        # uses them (the graphs alone did not say how to make their inputs or read their outputs)
        loaded = load_cli_model(argparse.Namespace(model=args.model, device="cpu"))
        from clipforge.inference.onnx_export import export_onnx

        meta = export_onnx(loaded, args.out, opset=args.opset, verify=not args.no_verify, name=args.model)
    except BaseException:
        _remove_created(created)
        raise
    print(f"wrote {meta['image']['file']} and {meta['text']['file']} to {args.out} (opset {meta['opset']}, "
          f"embed_dim {meta['embed_dim']}, image {meta['image_resolution']}px, text {meta['context_length']} tokens)")
    if "parity" in meta:
        parity = meta["parity"]
        print(f"onnxruntime parity: image max |diff| {parity['image_max_abs_diff']:.2e} "
              f"({parity['image_max_rel_diff']:.1e} of its largest |value|), text {parity['text_max_abs_diff']:.2e} "
              f"({parity['text_max_rel_diff']:.1e}); allowed: {PARITY_RULE}")
    return 0


def _remove_created(created: list[str]) -> None:
    """Remove the folders this export created, innermost first; a folder something else wrote into stays."""
    for folder in created:
        try:
            os.rmdir(folder)
        except OSError:
            break
