"""`FamilyCLIP`: one CLIP built from data for every family beyond OpenAI's shape.

SigLIP / SigLIP 2 (attention-pool image head, bidirectional text tower read at its last
position, projection with bias, tanh-GELU, sigmoid scores with `logit_bias`), MetaCLIP 2
worldwide (OpenAI's towers, text read at the first end token of XLM-V) and CLIPA-v2 (no ``ln_pre``,
the image read by the mean of its patch tokens, `family_clipa`; a bidirectional text tower read at
its last position) differ from OpenAI's CLIP only in the knobs listed in
`clipforge.models.family_keys`. So this is a subclass of `CLIP` (every task that takes a CLIP
takes it) whose towers are assembled from those knobs, reusing the same blocks: the fast inference
path packs them like OpenAI's.

Parameter layout (clipforge's own; `clipforge.weights.family_layouts` converts open_clip's
timm-layout files and transformers' Siglip folders to it): OpenAI's names, plus
``visual.conv1.bias``, ``visual.attn_pool.{probe, attn.*, ln, mlp.*}`` for the MAP head,
``text_projection.{weight,bias}`` when the projection has a bias, and ``logit_bias``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.models.clip import CLIP
from clipforge.models.configs import mlp_width, vision_heads
from clipforge.models.family_clipa import AvgPoolVisionTransformer
from clipforge.models.family_hf import HFTextTower
from clipforge.models.family_keys import FAMILY_DEFAULTS, check_family_fields, family_value
from clipforge.models.layers import LayerNorm, Transformer, check_image_grid, grid_rows, make_activation
from clipforge.models.tensor_checks import check_token_batch, check_tokens_fit
from clipforge.models.vit import VisionTransformer


class PoolAttention(nn.Module):
    """Attention of a few learned queries over a sequence (`nn.MultiheadAttention`'s parameter layout)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        w, b = self.in_proj_weight.to(x.dtype), self.in_proj_bias.to(x.dtype)
        q = F.linear(query, w[:width], b[:width])
        kv = F.linear(x, w[width:], b[width:])
        head = width // self.heads
        q = q.view(batch, query.shape[1], self.heads, head).transpose(1, 2)  # sizes named: see `grid_rows`
        kv = kv.view(batch, length, 2, self.heads, head).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.out_proj(out.transpose(1, 2).reshape(batch, query.shape[1], width))


class AttentionPoolHead(nn.Module):
    """SigLIP's multihead attention pooling (MAP): a learned probe attends over every patch,
    then a residual MLP; its single output row is the image feature. `activation` is kept as an
    attribute, as `ResidualAttentionBlock` keeps it, for the fast path."""

    def __init__(self, width: int, heads: int, hidden: int, activation: str, eps: float) -> None:
        super().__init__()
        self.activation = activation
        self.probe = nn.Parameter(torch.randn(1, 1, width) * width**-0.5)
        self.attn = PoolAttention(width, heads)
        self.ln = LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, hidden))
        self.mlp.add_module("gelu", make_activation(activation))
        self.mlp.add_module("c_proj", nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.probe.to(x.dtype).expand(x.shape[0], -1, -1), x)
        return (x + self.mlp(self.ln(x)))[:, 0]


class MapVisionTransformer(nn.Module):
    """A ViT without class token read through an attention-pool head (SigLIP's image tower)."""

    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int, *, mlp_width: int, activation: str, norm_eps: float, patch_bias: bool,
                 ln_pre: bool, proj: bool) -> None:
        super().__init__()
        # The patch grid is resolution // patch (SO400M/14 at 384 px: 27 x 27, the last 6 pixels
        # unread), as timm's and transformers' strided convolutions give.
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.output_dim = output_dim
        grid = input_resolution // patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=patch_bias)
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid, width))
        self.ln_pre = LayerNorm(width, eps=norm_eps) if ln_pre else None
        self.transformer = Transformer(width, layers, heads, mlp_width=mlp_width, activation=activation,
                                       norm_eps=norm_eps)
        self.ln_post = LayerNorm(width, eps=norm_eps)
        self.attn_pool = AttentionPoolHead(width, heads, mlp_width, activation, norm_eps)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim)) if proj else None

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width), as open_clip's ``model.visual.image_size``."""
        return (self.input_resolution, self.input_resolution)

    def lock_groups(self) -> list[list[Any]]:
        """Parameter groups, first to last, as timm's `group_matcher` numbers them for open_clip's
        `TimmModel.lock`: the stem (patch and position embeddings, `ln_pre`), each block but the last, the
        last block with the final norm (timm folds `norm` into it), then the attention-pool head (what the
        matcher leaves unmatched, its last group); a projection, which no published family has, comes last."""
        blocks = list(self.transformer.resblocks)
        groups: list[list[Any]] = [[self.conv1, self.positional_embedding, self.ln_pre],
                                   *[[block] for block in blocks[:-1]], [blocks[-1], self.ln_post], [self.attn_pool]]
        return groups + ([[self.proj]] if self.proj is not None else [])

    def patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] -> patch features [N, grid*grid, width] (the fast path packs this); images of another
        grid are one line (`check_image_grid`), not a size mismatch deep in the blocks."""
        check_image_grid(x, self.input_resolution, self.patch_size)
        return grid_rows(self.conv1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_patches(self.patch_embed(x))

    def pool_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Patch features [N, grid^2, width] -> image features: the tower after its patch embedding (the fast
        path embeds patches its own way and goes on from here)."""
        x = x + self.positional_embedding.to(x.dtype)
        if self.ln_pre is not None:
            x = self.ln_pre(x)
        x = self.attn_pool(self.ln_post(self.transformer(x)))
        return x @ self.proj.to(x.dtype) if self.proj is not None else x


class FamilyCLIP(CLIP):
    """A CLIP whose towers, pooling and scoring come from a config (see module docstring).

    `config` holds OpenAI's constructor fields plus the family fields; the model keeps it
    (`arch_config`) so saving writes exactly what rebuilds it.
    """

    def __init__(self, **config: Any) -> None:
        nn.Module.__init__(self)
        problems = check_family_fields(config)
        if problems:
            raise ValueError(problems[0])
        self.arch_config = dict(config)
        get = lambda key: family_value(config, key)  # noqa: E731
        embed_dim, width = int(config["embed_dim"]), int(config["transformer_width"])
        self.context_length = int(config["context_length"])
        self.vocab_size = int(config["vocab_size"])
        self.embed_dim = embed_dim
        self.activation = activation = str(config.get("activation", "quick_gelu"))
        self.vision_head_width = int(config.get("vision_head_width", 64))
        self.vision_mlp_ratio = float(config.get("vision_mlp_ratio", 4.0))
        self.norm_eps = eps = float(get("norm_eps"))
        self.text_pool = str(get("text_pool"))
        self.text_eos_id = get("text_eos_id")
        self.scoring = str(get("scoring"))
        self.tokenizer_cfg = get("tokenizer")
        self.preprocess_cfg = get("preprocess")  # the family's default; registry weights and files may say theirs
        text_activation = get("text_activation") or activation
        if isinstance(config["vision_layers"], (list, tuple)):
            raise ValueError("family configs build ViT image towers; ResNets use OpenAI's CLIP")
        vision = {k: config[k] for k in ("vision_width", "vision_layers")}
        vision.update(vision_head_width=self.vision_head_width, vision_mlp_ratio=self.vision_mlp_ratio)
        if get("vision_pool") == "map":
            self.visual: nn.Module = MapVisionTransformer(
                int(config["image_resolution"]), int(config["vision_patch_size"]), int(config["vision_width"]),
                int(config["vision_layers"]), vision_heads(vision), embed_dim, mlp_width=mlp_width(vision),
                activation=activation, norm_eps=eps, patch_bias=bool(get("vision_patch_bias")),
                ln_pre=bool(get("vision_ln_pre")), proj=bool(get("vision_proj")))
        elif get("vision_pool") == "avg":  # CLIPA: the mean of the patch tokens (`family_clipa`)
            self.visual = AvgPoolVisionTransformer(
                int(config["image_resolution"]), int(config["vision_patch_size"]), int(config["vision_width"]),
                int(config["vision_layers"]), vision_heads(vision), embed_dim, mlp_width=mlp_width(vision),
                activation=activation, norm_eps=eps, patch_bias=bool(get("vision_patch_bias")),
                ln_pre=bool(get("vision_ln_pre")), proj=bool(get("vision_proj")))
        else:
            odd = [k for k in ("vision_patch_bias", "vision_ln_pre", "vision_proj") if get(k) != FAMILY_DEFAULTS[k]]
            if odd or eps != 1e-5:
                raise ValueError(f"a class-token image tower is OpenAI's: {', '.join(odd) or 'norm_eps'} "
                                 "needs vision_pool 'map' or 'avg'")
            self.visual = VisionTransformer(
                input_resolution=int(config["image_resolution"]), patch_size=int(config["vision_patch_size"]),
                width=int(config["vision_width"]), layers=int(config["vision_layers"]), heads=vision_heads(vision),
                output_dim=embed_dim, mlp_width=mlp_width(vision), activation=activation)
        sigmoid = self.scoring == "sigmoid"
        # SigLIP's initial temperature and bias (log 10, -10); CLIP's 1/0.07.
        self.logit_scale = nn.Parameter(torch.ones([]) * (math.log(10.0) if sigmoid else math.log(1 / 0.07)))
        self.logit_bias = nn.Parameter(torch.ones([]) * -10.0) if sigmoid else None
        self.text: HFTextTower | None = None
        if get("text_hf") is not None:  # open_clip's HF text towers: transformers' encoder (`family_hf`)
            self.text = HFTextTower(get("text_hf"), embed_dim, self.text_pool, bool(get("text_proj_mlp")))
            self.transformer = self.token_embedding = self.positional_embedding = None  # type: ignore[assignment]
            self.ln_final = self.text_projection = None  # type: ignore[assignment]
            self.visual.transformer.init_weights()
            return
        self.transformer = Transformer(width, int(config["transformer_layers"]), int(config["transformer_heads"]),
                                       causal=bool(get("text_causal")), activation=text_activation,
                                       mlp_width=round(width * float(get("text_mlp_ratio"))), norm_eps=eps)
        self.token_embedding = nn.Embedding(self.vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, width))
        self.ln_final = LayerNorm(width, eps=eps)
        if not get("text_proj"):
            self.text_projection: nn.Module | nn.Parameter | None = None
        elif get("text_proj_bias"):
            self.text_projection = nn.Linear(width, embed_dim)
        else:
            self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self._init_family()

    def _init_family(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.text_projection, nn.Linear):
            nn.init.normal_(self.text_projection.weight, std=self.transformer.width**-0.5)
            nn.init.zeros_(self.text_projection.bias)
        elif self.text_projection is not None:
            nn.init.normal_(self.text_projection, std=self.transformer.width**-0.5)
        self.transformer.init_weights()
        self.visual.transformer.init_weights()

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def _project_text(self, x: torch.Tensor) -> torch.Tensor:
        if self.text_projection is None:
            return x
        if isinstance(self.text_projection, nn.Linear):
            return F.linear(x, self.text_projection.weight.to(x.dtype), self.text_projection.bias.to(x.dtype))
        return x @ self.text_projection.to(x.dtype)

    def text_pool_positions(self, text: torch.Tensor) -> torch.Tensor:
        """Where each sequence's feature is read: argmax id, first `text_eos_id`, or the last position. The
        shape is checked first (`tensor_checks`): the fast path (`clipforge.inference`) calls this before its kernels."""
        check_token_batch(text)
        if self.text_pool == "last":
            return text[:, 0] * 0 + (text.shape[1] - 1)  # (written so an ONNX trace keeps the batch dynamic)
        if self.text_pool == "eos":
            return (text == int(self.text_eos_id)).int().argmax(dim=-1)
        return text.argmax(dim=-1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if self.text is None:
            return super().set_grad_checkpointing(enable)
        encoder = self.text.transformer  # (transformers 5 renamed the call; 4.x has only the old name)
        verb = "enable" if enable else "disable"
        call = getattr(encoder, f"activation_checkpointing_{verb}", None) or getattr(
            encoder, f"gradient_checkpointing_{verb}")
        call()
        if hasattr(self.visual, "transformer"):
            self.visual.transformer.grad_checkpointing = enable

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Text features at each sequence's pooling position. A causal tower stops at the last
        position read (later ones cannot change it); a bidirectional one sees the whole padded row.
        A transformers tower (`family_hf`) pools over the non-pad positions itself."""
        check_token_batch(text)
        if self.text is not None:
            vocab = self.text.transformer.get_input_embeddings().num_embeddings
            read = (text != self.text.pad_id).any(dim=0).nonzero()  # padding past the context is masked: allowed
            length = int(read[-1].item()) + 1 if read.numel() else 0
            check_tokens_fit(text, length, self.context_length, vocab)  # "index out of range in self" before
            if not text.shape[0]:  # transformers' towers fail on an empty batch
                return torch.zeros((0, self.embed_dim), device=text.device)
            features = self.text(text)
            return F.normalize(features, dim=-1) if normalize else features
        pos = self.text_pool_positions(text)
        length = text.shape[1]
        if self.transformer.causal and text.numel():
            length = int(pos.max().item()) + 1
        check_tokens_fit(text, length, self.context_length, self.token_embedding.num_embeddings)
        x = self.token_embedding(text[:, :length]).to(self.dtype)
        x = x + self.positional_embedding[:length].to(self.dtype)
        x = self.ln_final(self.transformer(x))
        features = self._project_text(x[torch.arange(x.shape[0], device=x.device), pos])
        return F.normalize(features, dim=-1) if normalize else features

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Image-by-text logits of unit features: scale·cos (+ bias for sigmoid scoring)."""
        out = self.logit_scale.exp() * image_features @ text_features.t()
        return out + self.logit_bias if self.logit_bias is not None else out

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> Any:
        """openai/CLIP's (logits_per_image, logits_per_text), bias included; open_clip's outputs
        for models made by `clipforge.create_model*` (see `CLIP.forward`)."""
        if self.__dict__.get("_cf_open_clip_forward"):
            return self._open_clip_outputs(image, text)
        image_features = F.normalize(self.encode_image(image), dim=-1)
        text_features = F.normalize(self.encode_text(text), dim=-1)
        logits_per_image = self.logits(image_features, text_features)
        return logits_per_image, logits_per_image.t()
