"""WiSE-FT (Wortsman et al. 2022): interpolate zero-shot and fine-tuned weights.

theta = (1 - alpha) * theta_zeroshot + alpha * theta_finetuned. Fine-tuning end to end gains
accuracy on the target distribution but loses robustness elsewhere; the straight line in
weight space between the two models keeps most of both, because fine-tuning from a shared
initialisation stays in one linearly connected basin. Only meaningful for two checkpoints of
the same architecture, so shapes and names are checked first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def interpolate_state_dicts(zeroshot: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor],
                            alpha: float) -> dict[str, torch.Tensor]:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if zeroshot.keys() != finetuned.keys():
        only_a = sorted(set(zeroshot) - set(finetuned))[:5]
        only_b = sorted(set(finetuned) - set(zeroshot))[:5]
        raise ValueError(f"the checkpoints are not the same architecture: parameters only in the zero-shot "
                         f"model {only_a}, only in the fine-tuned model {only_b}")
    out = {}
    for key, a in zeroshot.items():
        b = finetuned[key]
        if a.shape != b.shape:
            raise ValueError(f"the checkpoints are not the same architecture: {key} has shape "
                             f"{tuple(a.shape)} vs {tuple(b.shape)}")
        if a.is_floating_point():
            out[key] = ((1.0 - alpha) * a.double() + alpha * b.double()).to(a.dtype)
        else:  # integer buffers (e.g. BatchNorm's num_batches_tracked) cannot be averaged
            out[key] = b.clone()
    return out


def _load(spec: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict, Any]:
    """Weights, config and the `LoadedModel` of a model name (ViT-B/32, clipforge-tiny) or a checkpoint path."""
    from clipforge.api import load_model

    loaded = load_model(spec, "cpu")
    model = loaded.model
    if isinstance(getattr(model, "config", None), dict) and "bert" in model.config:  # Chinese-CLIP: its own config
        return model.state_dict(), dict(model.config), loaded
    from clipforge.weights.save import model_config

    return model.state_dict(), model_config(model), loaded


def check_out(out: Path, inputs: dict[str, str | os.PathLike[str]]) -> None:
    """ValueError naming --out, before either model loads, when it is one of the input checkpoints (the mix
    silently replaced the fine-tuned weights, and a training checkpoint's file no longer matched its
    training state), a folder, or in a folder that cannot be written (an errno after both models loaded)."""
    from clipforge.atomic import folder_problem

    for flag, spec in inputs.items():
        try:
            same = out.exists() and Path(spec).exists() and os.path.samefile(out, spec)
        except OSError:
            same = False
        if same:
            raise ValueError(f"--out {out} is the {flag} checkpoint; writing the interpolated weights there would "
                             "replace it: name another file")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; name the .safetensors file to write")
    problem = folder_problem(out.parent)
    if problem is not None:
        raise ValueError(f"--out {out}: {out.parent} {problem}" if problem.startswith("is ")
                         else f"--out {out}: {problem}")


def _differences(a: dict, b: dict) -> str:
    """The architecture fields two configs disagree on, e.g. "image_resolution 64 vs 32; vision_layers ..."."""
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
    shown = "; ".join(f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:4])
    return shown + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def wise_ft(zeroshot: str | os.PathLike[str], finetuned: str | os.PathLike[str], alpha: float,
            out: str | os.PathLike[str]) -> Path:
    """Write the interpolated model as safetensors (config, preprocessing and languages in metadata, the family's
    tokenizer file beside it) and return its path. Both models load through `clipforge.api.load_model`;
    the result keeps the zero-shot model's preprocessing, tokenizer and scoring, and reads the languages of both
    (a mix of two clipforge-tiny-zh fine-tunes was taken for English; a bilingual fine-tune mixed into
    clipforge-tiny kept only English, even at alpha 1)."""
    from clipforge.train.tokenizer_file import carry_tokenizer_file
    from clipforge.weights import save_safetensors
    from clipforge.zeroshot.languages import model_languages

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = Path(out)
    check_out(out, {"--zeroshot": zeroshot, "--finetuned": finetuned})
    sd_a, config_a, loaded_a = _load(zeroshot)
    sd_b, config_b, loaded_b = _load(finetuned)
    if config_a != config_b:
        raise ValueError(f"the checkpoints are not the same architecture: {_differences(config_a, config_b)} "
                         f"({zeroshot} vs {finetuned})")
    carry_tokenizer_file(loaded_a.tokenizer, out.parent)
    return save_safetensors(interpolate_state_dicts(sd_a, sd_b, alpha), out, config=config_a,
                            preprocess=getattr(loaded_a.model, "preprocess_cfg", None),
                            languages=list(dict.fromkeys([*model_languages(loaded_b), *model_languages(loaded_a)])))
