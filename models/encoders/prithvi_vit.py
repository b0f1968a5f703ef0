"""Prithvi-EO-2.0 ViT encoder on timm blocks (architecture only, no weights).

The Prithvi-EO-2.0 model card (Hugging Face, ibm-nasa-geospatial) describes
a ViT with a 3-D patch embedding and 3-D position embeddings. The details here
were read, not copied, from a copy of IBM's ``prithvi_mae.py`` (in the
andrewpatrickdu/geofm repository). The patch embedding is a 3-D convolution
over (time, rows, cols) with a 1×16×16 kernel, followed by fixed 3-D
sine-cosine position embeddings, a CLS token, pre-norm timm blocks and a final
LayerNorm, all with eps 1e-6. Parameter names follow the published
checkpoint's encoder (``patch_embed.proj``, ``cls_token``, ``blocks.N``,
``norm``), so it loads with strict key matching once the ``encoder.`` prefix is
stripped.

NOTE: the published weights were not available, so outputs were compared
only on random weights, against that copy of ``prithvi_mae.py``: the final
tokens agreed to 3e-6 for 4 frames at 64 px and 3 frames at 96 px. The copy
replaces timm's blocks with its own whose LayerNorms use eps 1e-5, while its
default norm layer (and timm's blocks built with it) use 1e-6, which this
module follows.

This module imports torch and timm at import time; the Prithvi encoder
imports it only when it builds the model.
"""

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Return sine-cosine embeddings ``(len(positions), dim)``: sines first, then cosines.

    Frequencies are ``1 / 10000 ** (i / (dim / 2))`` for ``i < dim / 2``, the
    transformer convention.
    """
    if dim % 2:
        raise ValueError(f"sincos_1d: dim {dim} must be even")
    exponents = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    frequencies = 1.0 / (10000.0**exponents)
    angles = positions.to(torch.float64).reshape(-1, 1) * frequencies.reshape(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_3d(dim: int, frame_positions: Sequence[float], rows: int, cols: int) -> torch.Tensor:
    """Return 3-D position embeddings ``(1 + T * rows * cols, dim)`` with a zero CLS row.

    The channels are split as Prithvi does: 6/16 encode the column, 6/16 the
    row and 4/16 the frame, concatenated in that order. Tokens are ordered
    frame-major, then row, then column, as a flattened ``Conv3d`` output.

    Args:
        dim: Embedding width, a multiple of 16.
        frame_positions: Temporal position of each frame (0, 1, 2, … for
            consecutive frames).
        rows: Patch rows per frame.
        cols: Patch columns per frame.
    """
    if dim % 16:
        raise ValueError(f"sincos_3d: dim {dim} must be a multiple of 16")
    col_dim = row_dim = dim // 16 * 6
    frame_dim = dim - col_dim - row_dim
    frames = len(frame_positions)

    col_embed = sincos_1d(col_dim, torch.arange(cols)).repeat(frames * rows, 1)
    row_embed = sincos_1d(row_dim, torch.arange(rows)).repeat_interleave(cols, dim=0).repeat(frames, 1)
    frame_embed = sincos_1d(frame_dim, torch.tensor(list(frame_positions))).repeat_interleave(rows * cols, dim=0)
    grid = torch.cat([col_embed, row_embed, frame_embed], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=grid.dtype), grid], dim=0).float()


class PatchEmbed3d(nn.Module):
    """Non-overlapping 3-D patches ``(B, C, T, H, W)`` → tokens ``(B, T·h·w, D)``."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: tuple[int, int, int]) -> None:
        """Create the 3-D convolution whose kernel and stride are ``patch_size``."""
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed ``x`` and flatten the (frame, row, col) grid into tokens."""
        return self.proj(x).flatten(2).transpose(1, 2)


class PrithviViT(nn.Module):
    """Prithvi-EO-2.0 encoder: 3-D patch embedding, CLS token, ViT blocks, final norm."""

    def __init__(
        self,
        in_chans: int = 6,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        patch_size: tuple[int, int, int] = (1, 16, 16),
    ) -> None:
        """Create the encoder; defaults are the 300M model (1024 wide, 24 deep, 16 heads)."""
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed3d(in_chans, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList(
            [
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
                for _ in range(depth)
            ]
        )
        self.norm = norm_layer(embed_dim)
        # Position embeddings are computed per input grid and cached here,
        # outside the state dict, so a checkpoint's stored table is never used.
        self._pos_cache: dict[tuple[tuple[float, ...], int, int], torch.Tensor] = {}
        nn.init.normal_(self.cls_token, std=0.02)

    def position_embedding(self, frame_positions: Sequence[float], rows: int, cols: int) -> torch.Tensor:
        """Return the cached ``(1, 1 + T·rows·cols, D)`` position embedding for a grid."""
        key = (tuple(float(p) for p in frame_positions), rows, cols)
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_3d(self.embed_dim, key[0], rows, cols).unsqueeze(0)
        return self._pos_cache[key]

    def forward(self, x: torch.Tensor, frame_positions: Sequence[float] | None = None) -> torch.Tensor:
        """Return the normalised tokens ``(B, 1 + T·h·w, D)``; token 0 is CLS.

        Args:
            x: Input ``(B, C, T, H, W)``; H and W must be multiples of 16.
            frame_positions: Temporal position of each of the T frames
                (default 0 … T-1). Passing the season indices keeps each
                season's temporal code when some seasons are absent.
        """
        _, _, frames, height, width = x.shape
        if frame_positions is None:
            frame_positions = list(range(frames))
        if len(frame_positions) != frames:
            raise ValueError(f"PrithviViT: {len(frame_positions)} frame positions for {frames} frames")
        if height % self.patch_size[1] or width % self.patch_size[2]:
            raise ValueError(f"PrithviViT: input {height}x{width} px is not a multiple of the patch size")
        pos_embed = self.position_embedding(
            frame_positions, height // self.patch_size[1], width // self.patch_size[2]
        ).to(device=x.device, dtype=x.dtype)

        tokens = self.patch_embed(x) + pos_embed[:, 1:]
        cls = (self.cls_token + pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)
