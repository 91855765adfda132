"""The CLIP model: an image tower and a causal text tower meeting in a joint embedding space."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.models.configs import (
    ARCH_CONFIGS,
    DEFAULT_ACTIVATION,
    OPENAI_MODELS,
    mlp_width,
    same_shape,
    vision_heads,
)
from clipforge.models.family_keys import (
    FAMILY_DEFAULTS,
    FAMILY_KEYS,
    family_value,
    has_hf_text_keys,
    is_family_config,
)
from clipforge.models.layers import LayerNorm, Transformer
from clipforge.models.resnet import ModifiedResNet
from clipforge.models.tensor_checks import (  # noqa: F401  (TokensError: re-exported from its first home)
    TokensError,
    check_image_batch,
    check_token_batch,
    check_tokens_fit,
)
from clipforge.models.vit import VisionTransformer


class CLIP(nn.Module):
    """The positional arguments are exactly those of OpenAI's reference `CLIP`, so configs and
    checkpoints move between the two without translation. The keyword-only knobs are open_clip's
    (see `clipforge.models.configs`): the MLP activation of both towers, the ViT's head width and
    MLP ratio. They change no parameter names, so state dicts stay OpenAI-layout."""

    def __init__(self, embed_dim: int, image_resolution: int, vision_layers: int | tuple[int, ...] | list[int],
                 vision_width: int, vision_patch_size: int | None, context_length: int, vocab_size: int,
                 transformer_width: int, transformer_heads: int, transformer_layers: int, *,
                 activation: str = DEFAULT_ACTIVATION, vision_head_width: int = 64,
                 vision_mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.activation = activation
        self.vision_head_width = vision_head_width
        self.vision_mlp_ratio = vision_mlp_ratio
        shape = {"vision_width": vision_width, "vision_layers": vision_layers,
                 "vision_head_width": vision_head_width, "vision_mlp_ratio": vision_mlp_ratio}
        if isinstance(vision_layers, (tuple, list)):
            self.visual: nn.Module = ModifiedResNet(
                layers=tuple(vision_layers), output_dim=embed_dim, heads=vision_heads(shape),
                input_resolution=image_resolution, width=vision_width)
        else:
            if vision_patch_size is None:
                raise ValueError("a ViT image tower needs vision_patch_size")
            self.visual = VisionTransformer(
                input_resolution=image_resolution, patch_size=vision_patch_size, width=vision_width,
                layers=vision_layers, heads=vision_heads(shape), output_dim=embed_dim,
                mlp_width=mlp_width(shape), activation=activation)
        self.transformer = Transformer(transformer_width, transformer_layers, transformer_heads, causal=True,
                                       activation=activation)
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.initialize_parameters()

    def initialize_parameters(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=self.transformer.width**-0.5)
        self.transformer.init_weights()
        if isinstance(self.visual, ModifiedResNet):
            self.visual.init_weights()
        else:
            self.visual.transformer.init_weights()

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    @property
    def image_size(self) -> int:
        return self.visual.input_resolution

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Image features of a preprocessed float batch [batch, 3, H, W] (checked first: `tensor_checks`)."""
        # before the fast path's kernels (oneDNN said gibberish for 1/4 channels or a 3-D tensor) and the blocks (a size
        # of another grid failed deep in them): one line naming the shape or the resolution, grad on or off
        check_image_batch(image, tower=self.visual)
        features = self.visual(image.to(self.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Text features at each sequence's EOT token (the highest id in the vocabulary).

        Because the mask is causal, the EOT feature never depends on positions after it, so
        the tower only runs on the first `max(eot) + 1` positions of the batch: identical
        output, much less work for short prompts padded to 77. `text` must be token ids [batch, context]
        (`tensor_checks.check_token_batch`, one line naming the shape otherwise).
        """
        check_token_batch(text)
        eot = text.argmax(dim=-1)
        length = self.text_length(text, eot)
        x = self.token_embedding(text[:, :length]).to(self.dtype)
        x = x + self.positional_embedding[:length].to(self.dtype)
        x = self.ln_final(self.transformer(x))
        features = x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection.to(x.dtype)
        return F.normalize(features, dim=-1) if normalize else features

    def text_length(self, text: torch.Tensor, eot: torch.Tensor | None = None) -> int:
        """Positions the text tower runs (through the batch's last end token), checked against this model.

        Ids from another tokenizer (OpenAI's 77-position BPE given to clipforge-tiny-zh's 16 positions, or ids
        past the vocabulary) failed deep inside with "The size of tensor a (19) must match the size of tensor
        b (16)" or "index out of range in self"; they are one `TokensError` saying how to tokenize for it.
        The shape is checked first: the fast path's `encode_text` (`clipforge.inference`) calls this before
        any kernel, so a [77] or [1, 2, 77] tensor is the same one line there as on the reference path.
        """
        check_token_batch(text)
        if not text.numel():
            return 1
        length = int((text.argmax(dim=-1) if eot is None else eot).max().item()) + 1
        check_tokens_fit(text, length, self.context_length, self.vocab_size)
        return length

    # --- open_clip's model surface (`clipforge.create_model*`; see `clipforge.zoo`) ---------------

    def lock_image_tower(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """Freeze the image tower, open_clip's call: with `unlocked_groups` = k the last k of its groups stay
        trainable (a ViT's groups, first to last: patch and position embeddings with `ln_pre`, each block but
        the last, the last block with `ln_post`, the projection; SigLIP's attention-pool tower: timm's groups,
        `MapVisionTransformer.lock_groups`), for partial fine-tuning. A ModifiedResNet refuses k > 0, as there."""
        self.visual.requires_grad_(False)
        if freeze_bn_stats:
            for module in self.visual.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        if unlocked_groups:
            _unlock_last(_vit_groups(self.visual), unlocked_groups, "lock_image_tower(unlocked_groups)")

    def lock_text_tower(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """Freeze the text tower (embeddings, blocks, final norm, projection), open_clip's call: with
        `unlocked_layers` = k the last k groups stay trainable (the embeddings, each block but the last, the
        last block with `ln_final`, the projection). `freeze_layer_norm=False` is refused, as there. A
        transformers text tower locks as open_clip's `HFTextEncoder.lock` does (`HFTextTower.lock`)."""
        if getattr(self, "text", None) is not None:  # a transformers encoder: open_clip's HFTextEncoder.lock
            self.text.lock(unlocked_layers, freeze_layer_norm)
            return
        if not freeze_layer_norm:
            raise NotImplementedError("lock_text_tower(freeze_layer_norm=False): LayerNorms are frozen with their "
                                      "tower (open_clip refuses it too)")
        for name, param in self.named_parameters():
            if not name.startswith("visual.") and name not in ("logit_scale", "logit_bias"):
                param.requires_grad_(False)
        if unlocked_layers:
            groups: list[list[Any]] = [[self.token_embedding, self.positional_embedding]]
            blocks = list(self.transformer.resblocks)
            groups += [[block] for block in blocks[:-1]] + [[blocks[-1], self.ln_final]]
            if getattr(self, "text_projection", None) is not None:
                groups.append([self.text_projection])
            _unlock_last(groups, unlocked_layers, "lock_text_tower(unlocked_layers)")

    @property
    def attn_mask(self) -> torch.Tensor | None:
        """open_clip's text mask, for code that runs the blocks itself (``model.transformer(x,
        attn_mask=model.attn_mask)``): [context_length, context_length] float, -inf above the diagonal (a
        position sees itself and the positions before it); None for a bidirectional text tower. Slice it with
        the tokens (``[:L, :L]``)."""
        if not getattr(self.transformer, "causal", False):
            return None
        n = int(self.context_length)
        return torch.full((n, n), float("-inf"), device=self.token_embedding.weight.device).triu_(1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass (both towers), as open_clip's call."""
        self.transformer.grad_checkpointing = enable
        if hasattr(self.visual, "transformer"):
            self.visual.transformer.grad_checkpointing = enable

    def _open_clip_outputs(self, image: torch.Tensor | None, text: torch.Tensor | None) -> Any:
        """open_clip's forward: unit features and exp(logit_scale) (and logit_bias), tuple or dict."""
        out: dict[str, Any] = {
            "image_features": self.encode_image(image, normalize=True) if image is not None else None,
            "text_features": self.encode_text(text, normalize=True) if text is not None else None,
            "logit_scale": self.logit_scale.exp()}
        if getattr(self, "logit_bias", None) is not None:
            out["logit_bias"] = self.logit_bias
        return out if self.__dict__.get("_cf_output_dict") else tuple(out.values())

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> Any:
        """openai/CLIP's meaning: (logits_per_image, logits_per_text). A model made by
        `clipforge.create_model*` (open_clip's API) returns open_clip's instead:
        (image_features, text_features, logit_scale.exp()) of unit features, or a dict with
        ``output_dict=True``."""
        if self.__dict__.get("_cf_open_clip_forward"):
            return self._open_clip_outputs(image, text)
        image_features = self.encode_image(image)
        text_features = self.encode_text(text)
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.t()
        return logits_per_image, logits_per_image.t()


# Keys OpenAI's TorchScript archives carry beside the parameters; not part of the module.
_NON_PARAMETER_KEYS = ("input_resolution", "context_length", "vocab_size")


def config_from_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Infer the constructor arguments from tensor shapes, as OpenAI's `build_model` does.

    clipforge's family layout (an attention-pool image head, a projection with bias,
    `logit_bias`) shows in its keys; what shapes cannot show (heads, pooling, activation) comes
    from the registered architecture of the same shape (`_with_known_heads`).
    """
    sd = state_dict
    if has_hf_text_keys(sd):  # a transformers text tower: its config is data (`family_hf_match`)
        from clipforge.models.family_hf_match import hf_tower_config_from_state_dict

        return hf_tower_config_from_state_dict(sd)
    family: dict[str, Any] = {}
    if "visual.attn_pool.probe" in sd:
        vision_width = sd["visual.conv1.weight"].shape[0]
        vision_layers: int | tuple[int, ...] = len(
            [k for k in sd if k.startswith("visual.transformer.") and k.endswith(".attn.in_proj_weight")])
        vision_patch_size: int | None = sd["visual.conv1.weight"].shape[-1]
        grid = round(sd["visual.positional_embedding"].shape[0] ** 0.5)
        image_resolution = vision_patch_size * grid
        family.update(vision_pool="map", vision_patch_bias="visual.conv1.bias" in sd,
                      vision_ln_pre="visual.ln_pre.weight" in sd, vision_proj="visual.proj" in sd)
    elif "visual.proj" in sd:
        vision_width = sd["visual.conv1.weight"].shape[0]
        vision_layers = len(
            [k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
        vision_patch_size = sd["visual.conv1.weight"].shape[-1]
        grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
        image_resolution = vision_patch_size * grid
        if "visual.ln_pre.weight" not in sd:  # a class-token ViT without ln_pre: CLIPA's, read by the mean
            family.update(vision_pool="avg", vision_ln_pre=False)  # of its patch tokens (`family_clipa`)
    elif "visual.attnpool.positional_embedding" in sd:
        vision_layers = tuple(
            len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{i}.")}) for i in (1, 2, 3, 4))
        vision_width = sd["visual.layer1.0.conv1.weight"].shape[0]
        grid = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
        vision_patch_size = None
        image_resolution = grid * 32
    else:
        raise ValueError("state dict has neither `visual.proj` (ViT) nor `visual.attnpool` (ResNet): "
                         "not a CLIP checkpoint in OpenAI layout")
    transformer_width = sd["ln_final.weight"].shape[0]
    if "text_projection.weight" in sd:
        embed_dim = sd["text_projection.weight"].shape[0]
        family["text_proj_bias"] = True
    elif "text_projection" not in sd:
        embed_dim = sd["ln_final.weight"].shape[0]
        family["text_proj"] = False
    else:
        embed_dim = sd["text_projection"].shape[1]
    if "logit_bias" in sd:
        family["scoring"] = "sigmoid"
    config: dict[str, Any] = {
        "embed_dim": int(embed_dim),
        "image_resolution": int(image_resolution),
        "vision_layers": vision_layers,
        "vision_width": int(vision_width),
        "vision_patch_size": None if vision_patch_size is None else int(vision_patch_size),
        "context_length": sd["positional_embedding"].shape[0],
        "vocab_size": sd["token_embedding.weight"].shape[0],
        "transformer_width": int(transformer_width),
        "transformer_heads": int(transformer_width // 64),
        "transformer_layers": len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")}),
    }
    fc = sd.get("visual.transformer.resblocks.0.mlp.c_fc.weight")
    if fc is not None and fc.shape[0] != 4 * vision_width:
        config["vision_mlp_ratio"] = fc.shape[0] / vision_width
    if family.get("vision_pool") == "avg" and not _clipa_shaped(config):  # no ln_pre, yet no CLIPA's shapes: a
        del family["vision_pool"], family["vision_ln_pre"]  # damaged OpenAI file, refused by its strict load
    text_fc = sd.get("transformer.resblocks.0.mlp.c_fc.weight")
    if family and text_fc is not None and text_fc.shape[0] != 4 * transformer_width:
        family["text_mlp_ratio"] = text_fc.shape[0] / transformer_width
    return _with_known_heads({**config, **{k: v for k, v in family.items() if v != FAMILY_DEFAULTS[k]}})


def _with_known_heads(config: dict[str, Any]) -> dict[str, Any]:
    """Head counts do not show in tensor shapes: take them from the registered architecture of
    the same shape (ViT-H/g/bigG use head widths other than 64), else keep width // 64."""
    for name, known in ARCH_CONFIGS.items():
        if name.startswith("test-") or not same_shape(config, known) or not _same_layout(config, known):
            continue
        config["transformer_heads"] = known["transformer_heads"]
        for key in ("vision_head_width", "vision_mlp_ratio", *FAMILY_KEYS):
            if key in known:
                config[key] = known[key]
        if is_family_config(known) and "activation" in known:
            config["activation"] = known["activation"]
        break
    return config


def _clipa_shaped(config: dict[str, Any]) -> bool:
    """Whether a registered architecture read by the mean of its patch tokens (CLIPA) has these shapes. A missing
    ``visual.ln_pre`` alone is also an OpenAI file with tensors lost: read as CLIPA it loaded silently, its image
    tower averaged and its text tower OpenAI's, where its strict load names the missing ``ln_pre``."""
    return any(not name.startswith("test-") and family_value(known, "vision_pool") == "avg" and same_shape(config, known)
               for name, known in ARCH_CONFIGS.items())


def _same_layout(config: dict[str, Any], known: dict[str, Any]) -> bool:
    """Family knobs that show in the keys (attention pool, projection bias, logit bias) agree."""
    return all(family_value(config, k) == family_value(known, k)
               for k in ("vision_pool", "text_proj", "text_proj_bias", "scoring", "vision_patch_bias"))


def matching_architectures(config: dict[str, Any]) -> list[str]:
    """Registered architecture names whose tensors have the shapes of `config` (OpenAI's first)."""
    names = [n for n in ARCH_CONFIGS if not n.startswith("test-") and same_shape(config, ARCH_CONFIGS[n])]
    return sorted(names, key=lambda n: n not in OPENAI_MODELS)


def _vit_groups(visual: nn.Module) -> list[list[Any]]:
    """open_clip's parameter groups of a ViT image tower, first to last (`VisionTransformer.lock`); a tower
    that groups itself (`lock_groups`) says its own."""
    if hasattr(visual, "lock_groups"):
        return visual.lock_groups()
    if not all(hasattr(visual, name) for name in ("conv1", "class_embedding", "ln_pre", "ln_post", "proj")):
        raise NotImplementedError(f"lock_image_tower(unlocked_groups>0) on a {type(visual).__name__} image tower "
                                  "(open_clip groups only its ViT; train's --lock-image freezes the whole tower)")
    blocks = list(visual.transformer.resblocks)
    return [[visual.conv1, visual.class_embedding, visual.positional_embedding, visual.ln_pre],
            *[[block] for block in blocks[:-1]], [blocks[-1], visual.ln_post], [visual.proj]]


def _unlock_last(groups: list[list[Any]], count: int, call: str) -> None:
    """Make the last `count` groups trainable (all of them when `count` reaches their number, as open_clip's
    slice does); a negative count is refused (open_clip's slice would read it from the front)."""
    if int(count) < 0:
        raise ValueError(f"{call} must be >= 0, got {count}")
    for group in groups[-int(count):]:
        for item in group:
            if item is None:
                continue
            params = [item] if isinstance(item, nn.Parameter) else list(item.parameters())
            for param in params:
                param.requires_grad_(True)
