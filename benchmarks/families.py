"""SigLIP 2 B/16 towers: clipforge (what `load_model` returns: the packed fast path) vs transformers'
`SiglipModel`, same process, same random weights, fp32 and under bf16 autocast.

    python -m benchmarks.families            # batch 1 and 32, as issue 16 item 5 asks
    python -m benchmarks.families --quick    # batch 1 and 8, fewer repeats

Prints images/s (texts/s) for each side and their ratio, with the load average before and after
(the machine is shared: read ratios, not absolute figures). Not part of `benchmarks.run` (whose
owner merges sections); its rows follow the same rules (`benchmarks.common`).
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from benchmarks.common import load_average, machine_info, time_round_robin


def _models(depth: int | None):
    from transformers import SiglipConfig, SiglipModel

    from clipforge.inference.precision import enable_fast_forward
    from clipforge.models import create_model_from_config, get_config
    from clipforge.weights.family_layouts import siglip_hf_config, to_hf_siglip

    config = get_config("ViT-B-16-SigLIP2")
    if depth:
        config.update(vision_layers=depth, transformer_layers=depth)
    torch.manual_seed(0)
    ours = create_model_from_config(config).eval()
    hf = SiglipModel(SiglipConfig(**siglip_hf_config(config))).eval()
    hf.load_state_dict(to_hf_siglip(ours.state_dict()), strict=True)
    return enable_fast_forward(ours), hf, config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--depth", type=int, default=None, help="blocks per tower (default: the real 12)")
    args = parser.parse_args(argv)
    batches = (1, 8) if args.quick else (1, 32)
    repeats = 3 if args.quick else 7
    before = load_average()
    ours, hf, config = _models(args.depth)
    res, context = config["image_resolution"], config["context_length"]
    print(f"machine: {machine_info()}")
    for precision in ("fp32", "bf16"):
        ctx = (lambda: torch.autocast("cpu", torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
        for batch in batches:
            images = torch.randn(batch, 3, res, res)
            text = torch.randint(3, config["vocab_size"], (batch, context))

            def run(fn, x, ctx=ctx):
                def call():
                    with torch.inference_mode(), ctx():
                        return fn(x)
                return call

            for tower, x, ours_fn, hf_fn in (
                    ("image", images, ours.encode_image, lambda p: hf.vision_model(pixel_values=p).pooler_output),
                    ("text", text, ours.encode_text, lambda t: hf.text_model(input_ids=t).pooler_output)):
                timings = time_round_robin({"clipforge": run(ours_fn, x), "transformers": run(hf_fn, x)},
                                           repeats=repeats)
                mine, theirs = timings["clipforge"].per_second(batch), timings["transformers"].per_second(batch)
                print(f"SigLIP2 B/16 {tower:5s} {precision} batch {batch:2d}: clipforge {mine:8.2f}/s  "
                      f"transformers {theirs:8.2f}/s  ratio {mine / theirs:.2f}x")
    print(f"load average before {before}, after {load_average()}")


if __name__ == "__main__":
    main()
