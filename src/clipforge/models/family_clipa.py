"""CLIPA's image tower (UCSC-VLAA's CLIPA-v2): a class-token ViT read by the mean of its patch tokens.

open_clip builds it as its own ``VisionTransformer`` with ``pool_type="avg"``, ``no_ln_pre=True`` and
``final_ln_after_pool=True``: the class token still runs through every block (its position embedding
is row 0), but the feature is the mean of the *other* rows, normalised by ``ln_post`` after the
mean (not before, as open_clip's plain ``avg`` does), then projected by the bias-free ``proj``.

Parameter names are open_clip's (so OpenAI's): ``conv1.weight``, ``class_embedding``,
``positional_embedding`` [grid^2 + 1, width], ``transformer.*``, ``ln_post.*``, ``proj``; no ``ln_pre``
(its absence is how `clipforge.models.clip.config_from_state_dict` tells this tower from OpenAI's).
This is a tower of its own, not a `VisionTransformer` subclass, so nothing that knows OpenAI's ViT (the
fast path's packed class-token forward) takes it for one and reads the class token.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clipforge.models.layers import LayerNorm, Transformer, check_image_grid, grid_rows


class AvgPoolVisionTransformer(nn.Module):
    """A ViT whose image feature is ``ln_post(mean of the patch tokens) @ proj`` (CLIPA; module docstring)."""

    def __init__(
        self,
        input_resolution: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        output_dim: int,
        *,
        mlp_width: int,
        activation: str,
        norm_eps: float = 1e-5,
        patch_bias: bool = False,
        ln_pre: bool = False,
        proj: bool = True,
    ) -> None:
        super().__init__()
        if input_resolution % patch_size:
            raise ValueError(f"resolution {input_resolution} is not a multiple of patch size {patch_size}")
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.output_dim = output_dim
        grid = input_resolution // patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=patch_bias)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width, eps=norm_eps) if ln_pre else None
        self.transformer = Transformer(
            width, layers, heads, mlp_width=mlp_width, activation=activation, norm_eps=norm_eps
        )
        self.ln_post = LayerNorm(width, eps=norm_eps)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim)) if proj else None

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width), as open_clip's ``model.visual.image_size``."""
        return (self.input_resolution, self.input_resolution)

    def lock_groups(self) -> list[list[Any]]:
        """open_clip's `VisionTransformer.lock` groups, first to last: the stem, each block but the last, the
        last block with ``ln_post``, the projection."""
        blocks = list(self.transformer.resblocks)
        return [
            [self.conv1, self.class_embedding, self.positional_embedding, self.ln_pre],
            *[[block] for block in blocks[:-1]],
            [blocks[-1], self.ln_post],
            [self.proj],
        ]

    def patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] -> patch rows [N, grid*grid, width] (the fast path packs this as one matmul)."""
        check_image_grid(x, self.input_resolution, self.patch_size)
        return grid_rows(self.conv1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_patches(self.patch_embed(x))

    def pool_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Patch rows -> the image feature: class token and positions, the blocks, the patch tokens' mean."""
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        if self.ln_pre is not None:
            x = self.ln_pre(x)
        x = self.ln_post(self.transformer(x)[:, 1:].mean(dim=1))
        return x @ self.proj.to(x.dtype) if self.proj is not None else x
