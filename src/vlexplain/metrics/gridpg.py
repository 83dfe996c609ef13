"""Grid pointing game (Böhle et al., 2021, "GridPG"), for image-text models.

An ``n x n`` grid image is queried with the text of one cell; the score is the share of the
map's positive attribution mass that falls into that cell (chance: ``1 / n**2``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InputError


def cell_masks(size: tuple[int, int], n: int, device=None) -> Tensor:
    """(n*n, H, W) bool masks of the grid cells, row-major; pixel row y lies in cell row ``floor(y * n / H)``."""
    H, W = size
    ys = torch.arange(H, device=device)
    xs = torch.arange(W, device=device)
    row = (ys * n) // H
    col = (xs * n) // W
    cell = row[:, None] * n + col[None, :]
    return cell[None] == torch.arange(n * n, device=device).view(-1, 1, 1)


def grid_pointing_game(maps: Tensor, cell_index: Tensor, n: int) -> Tensor:
    """Share of positive attribution mass in the queried cell.

    Args:
        maps: (B, H, W) raw maps of grid images.
        cell_index: (B,) row-major index of the queried cell (0 .. n*n - 1), or one int for all.
        n: grid size (n x n cells).

    Returns:
        (B,) in [0, 1]; NaN where a map has no positive mass.
    """
    if maps.dim() != 3:
        raise InputError(f"maps must be (B, H, W), got {tuple(maps.shape)}")
    cell_index = torch.as_tensor(cell_index, device=maps.device).long().reshape(-1)
    if cell_index.numel() == 1:
        cell_index = cell_index.expand(maps.shape[0])
    if cell_index.numel() != maps.shape[0]:
        raise InputError(f"{cell_index.numel()} cell indices for {maps.shape[0]} maps")
    if n < 1 or bool(((cell_index < 0) | (cell_index >= n * n)).any()):
        raise InputError(f"cell_index must lie in 0 .. {n * n - 1} for a {n}x{n} grid")
    pos = maps.float().clamp_min(0)
    cells = cell_masks((maps.shape[-2], maps.shape[-1]), n, maps.device)[cell_index]
    inside = (pos * cells).flatten(1).sum(1)
    total = pos.flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.full_like(total, float("nan")))
