"""Tiled inference: run a network on overlapping tiles and cross-fade them, so memory is bounded
by the tile while the output has no seams."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, List, Optional, Tuple

import torch
from torch import Tensor
from tqdm import tqdm

from hat_basicsr.errors import OptionFileError
from hat_basicsr.utils.defaults import DEFAULT_TILE_PAD
from hat_basicsr.utils.option_spec import Option, Section, refuse_problem


@dataclass(frozen=True)
class TileOptions:
    """An option file's `tile: {tile_size, tile_pad}`: tiled inference for HATModel and the CLI."""

    tile_size: int
    tile_pad: int = DEFAULT_TILE_PAD

    OPTIONS: ClassVar[Section] = Section(
        (
            Option(
                'tile_size',
                'integer',
                'Core tile side in LR pixels.',
                required=True,
                minimum=1,
                expected_text='a positive integer (LR pixels)',
                floats_as_integers=False,
            ),
            Option(
                'tile_pad',
                'integer',
                f'Context each tile reads beyond its core, blended with its neighbours (default {DEFAULT_TILE_PAD}).',
                minimum=0,
                expected_text='a non-negative integer (LR pixels)',
                floats_as_integers=False,
            ),
        ),
        doc='Tiled inference; absent: whole-image inference.',
    )

    def __post_init__(self) -> None:
        refuse_problem(vars(self), self.OPTIONS, 'tile', 'tiled inference')

    @classmethod
    def from_dict(cls, tile: Any) -> Optional['TileOptions']:
        """Options from an option file's `tile` (None when absent: whole-image inference);
        OptionFileError naming the entry otherwise."""
        if tile is None:
            return None
        if not isinstance(tile, Mapping):
            raise OptionFileError(f'tile: got {tile!r}, expected a mapping with tile_size (and optionally tile_pad)')
        refuse_problem(tile, cls.OPTIONS, 'tile', 'tiled inference')
        return cls(**tile)


def _spans(length: int, tile: int, overlap: int) -> List[Tuple[int, int, int, int]]:
    """Per tile along one axis: (input start, input end, core start, core end)."""
    spans = []
    for core_start in range(0, length, tile):
        core_end = min(core_start + tile, length)
        spans.append((max(core_start - overlap, 0), min(core_end + overlap, length), core_start, core_end))
    return spans


def _ramp(start: int, end: int, length: int, overlap: int, scale: int) -> Tensor:
    """Output-resolution weights for one tile along one axis.

    Neighbouring tiles share a band of 2*overlap input pixels around their common core boundary;
    inside it one tile's weight falls linearly while the other's rises, and they sum to one.
    """
    weights = torch.ones((end - start) * scale)
    if overlap == 0:
        return weights
    band = 2 * overlap * scale
    ramp = (torch.arange(band, dtype=torch.float32) + 0.5) / band
    if start > 0:
        weights[:band] = torch.minimum(weights[:band], ramp[: weights[:band].numel()])
    if end < length:
        tail = weights[-band:]
        weights[-band:] = torch.minimum(tail, ramp.flip(0)[-tail.numel() :])
    return weights


def off_grid_warning(tile_size: int, tile_overlap: int, window_size: Optional[int]) -> Optional[str]:
    """Why tiles that are not multiples of the window change the output, or None when they are."""
    if not window_size or (tile_size % window_size == 0 and tile_overlap % window_size == 0):
        return None
    return (
        f'tile size {tile_size} / tile overlap {tile_overlap} are not multiples of window_size {window_size}: '
        'tiles then pad themselves differently from the whole image, so the output differs more from '
        'whole-image inference near the bottom/right borders.'
    )


def tiled_forward(
    net: Callable[[Tensor], Tensor],
    lq: Tensor,
    scale: int,
    tile_size: int,
    tile_overlap: int = 16,
    progress: bool = False,
) -> Tensor:
    """Super-resolve `lq` (B, C, H, W) tile by tile.

    `tile_size` is the core tile side in input pixels (any value: the network pads itself);
    `tile_overlap` is the context each tile reads beyond its core, blended with its neighbours.
    An exception in any tile propagates with the tile's position; nothing is reused or skipped.
    """
    if tile_size < 1 or tile_overlap < 0:
        raise ValueError(f'tile_size must be >= 1 and tile_overlap >= 0, got {tile_size} and {tile_overlap}')
    batch, _, height, width = lq.shape
    output = weight_sum = None
    tiles = [
        (rows, cols)
        for rows in _spans(height, tile_size, tile_overlap)
        for cols in _spans(width, tile_size, tile_overlap)
    ]
    for (top, bottom, _, _), (left, right, _, _) in tqdm(tiles, desc='tiles', disable=not progress, leave=False):
        try:
            sr = net(lq[..., top:bottom, left:right])
        except Exception as error:
            raise RuntimeError(
                f'tile rows {top}:{bottom}, cols {left}:{right} of a {height}x{width} input failed: {error}'
            ) from error
        expected = (batch, (bottom - top) * scale, (right - left) * scale)
        if (sr.shape[0], sr.shape[-2], sr.shape[-1]) != expected:
            raise RuntimeError(
                f'tile rows {top}:{bottom}, cols {left}:{right}: network returned '
                f'{tuple(sr.shape)}, expected scale {scale} output {expected}'
            )
        if output is None:
            output = sr.new_zeros(batch, sr.shape[1], height * scale, width * scale, dtype=torch.float32)
            weight_sum = sr.new_zeros(1, 1, height * scale, width * scale, dtype=torch.float32)
        weights = torch.outer(
            _ramp(top, bottom, height, tile_overlap, scale), _ramp(left, right, width, tile_overlap, scale)
        ).to(sr.device)
        region = (..., slice(top * scale, bottom * scale), slice(left * scale, right * scale))
        output[region] += sr.float() * weights
        weight_sum[region] += weights
    return (output / weight_sum).to(lq.dtype)
