"""`clipforge export onnx --model M --out DIR`: the image and text towers as ONNX graphs."""

from __future__ import annotations

import argparse

from clipforge.cli.common import add_model_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a model to another runtime's format (ONNX)",
                                   description="Export a model's towers to another runtime's format.")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT")
    onnx = formats.add_parser(
        "onnx", help="write image_encoder.onnx and text_encoder.onnx (dynamic batch and sequence axes), "
                     "checked against PyTorch with onnxruntime",
        description="Write image_encoder.onnx and text_encoder.onnx: outputs image_embeds/text_embeds are "
                    "L2-normalised (as Hugging Face's of those names), image_features/text_features the raw "
                    "encode_image/encode_text values; batch and sequence axes are dynamic; token ids int64. "
                    "Checked against PyTorch with onnxruntime (max abs difference <= 1e-4).")
    add_model_argument(onnx)
    onnx.add_argument("--out", required=True, help="output folder (created if missing)")
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    onnx.add_argument("--no-verify", action="store_true",
                      help="skip the onnxruntime parity check (max abs difference <= 1e-4)")
    onnx.set_defaults(func=run_onnx)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def run_onnx(args: argparse.Namespace) -> int:
    from clipforge.cli.common import load_model_for_cli
    from clipforge.inference.onnx_export import export_onnx

    model, _ = load_model_for_cli(args.model, device="cpu")
    meta = export_onnx(model, args.out, opset=args.opset, verify=not args.no_verify, name=args.model)
    print(f"wrote {meta['image']['file']} and {meta['text']['file']} to {args.out} (opset {meta['opset']}, "
          f"embed_dim {meta['embed_dim']}, image {meta['image_resolution']}px, text {meta['context_length']} tokens)")
    if "parity" in meta:
        parity = meta["parity"]
        print(f"onnxruntime parity: image max |diff| {parity['image_max_abs_diff']:.2e}, "
              f"text max |diff| {parity['text_max_abs_diff']:.2e} (limit 1e-4)")
    return 0
