"""The Vision Transformer image tower (Dosovitskiy et al.) as CLIP uses it.

CLIP's variant adds `ln_pre` before the transformer and projects the `ln_post`-normalised
class token with a bare `proj` matrix (no bias).
"""

from __future__ import annotations

import torch
from torch import nn

from clipforge.models.layers import LayerNorm, Transformer, grid_rows


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int,
                 output_dim: int, *, mlp_width: int | None = None, activation: str = "quick_gelu") -> None:
        super().__init__()
        if input_resolution % patch_size:
            raise ValueError(f"resolution {input_resolution} is not a multiple of patch size {patch_size}")
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.output_dim = output_dim
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        grid = input_resolution // patch_size
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_width=mlp_width, activation=activation)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width), as open_clip's ``model.visual.image_size``."""
        return (self.input_resolution, self.input_resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)  # [N, width, grid, grid]
        x = grid_rows(x)  # [N, grid*grid, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0, :]) @ self.proj
