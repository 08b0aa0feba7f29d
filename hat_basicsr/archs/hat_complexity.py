"""Parameters and multiply-adds (MACs) of HAT at a given input size, counted analytically.

Counted from HAT's options, per module, with the convention of the HAT paper
(and of the SwinIR figure it quotes): multiply-adds of every convolution and linear layer, plus
the two attention matrix products (q·kᵀ and attn·v) of each window attention and OCAB. Bias
additions, normalisation, activations, softmax, masks and pixel shuffles are not counted. This
reproduces the published 64×64 ×4 figures (tests/test_info.py checks them; the README's table
compares them). Inputs are counted at the size the network actually processes: padded up to a
multiple of the window.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence, Tuple

from torch import nn

from hat_basicsr.archs.hat_config import NUM_FEAT, overlap_window_size
from hat_basicsr.utils.complexity import Complexity, Row, count_parameters


def _conv3x3(pixels: int, cin: int, cout: int) -> int:
    return pixels * 9 * cin * cout


def hat_complexity(model: nn.Module, options: Mapping, size: Tuple[int, int]) -> Complexity:
    """Per-module parameters (from `model`, which may live on the meta device) and MACs (from
    `options`, HAT's constructor arguments) for one image of `size` (height, width)."""
    dim, cin = options['embed_dim'], options.get('in_chans', 3)
    window = options['window_size']
    overlap_window = overlap_window_size(window, options.get('overlap_ratio', 0.5))
    hidden = int(dim * options.get('mlp_ratio', 4.0))
    compressed = dim // options.get('compress_ratio', 3)
    squeezed = dim // options.get('squeeze_factor', 30)
    conv_residual = options.get('resi_connection', '1conv') == '1conv'
    height, width = (math.ceil(side / window) * window for side in size)
    tokens = height * width

    def linears(count: int) -> int:  # `count` C->C projections per token
        return tokens * dim * dim * count

    attention = linears(4) + 2 * tokens * window * window * dim  # qkv (3), proj (1), q·kᵀ and attn·v
    cab = 2 * _conv3x3(tokens, dim, compressed) + 2 * dim * squeezed  # two 3x3 convs, two 1x1 on pooled
    mlp = 2 * tokens * dim * hidden
    ocab = linears(4) + 2 * tokens * overlap_window * overlap_window * dim + mlp

    report = Complexity(size=tuple(size), processed_size=(height, width), params=count_parameters(model))

    def add(name: str, prefixes: Sequence[str], macs: int) -> None:
        report.rows.append(Row(name, count_parameters(model, prefixes), macs))

    add('conv_first', ['conv_first.'], _conv3x3(tokens, cin, dim))
    add('patch_embed.norm, norm', ['patch_embed.', 'norm.', 'absolute_pos_embed'], 0)
    for i, depth in enumerate(options['depths']):
        blocks = [f'layers.{i}.residual_group.blocks.{j}.' for j in range(depth)]
        add(
            f'layers.{i} HABs x{depth}: attention',
            [b + p for b in blocks for p in ('norm1.', 'attn.')],
            depth * attention,
        )
        add(f'layers.{i} HABs x{depth}: CAB', [b + 'conv_block.' for b in blocks], depth * cab)
        add(f'layers.{i} HABs x{depth}: MLP', [b + p for b in blocks for p in ('norm2.', 'mlp.')], depth * mlp)
        add(f'layers.{i} OCAB', [f'layers.{i}.residual_group.overlap_attn.'], ocab)
        add(f'layers.{i} conv', [f'layers.{i}.conv.'], _conv3x3(tokens, dim, dim) if conv_residual else 0)
    add('conv_after_body', ['conv_after_body.'], _conv3x3(tokens, dim, dim) if conv_residual else 0)
    add('conv_before_upsample', ['conv_before_upsample.'], _conv3x3(tokens, dim, NUM_FEAT))
    scale, pixels, upsample = options['upscale'], tokens, 0
    factors = [3] if scale == 3 else [2] * int(math.log2(scale))
    for factor in factors:
        upsample += _conv3x3(pixels, NUM_FEAT, factor * factor * NUM_FEAT)
        pixels *= factor * factor
    add('upsample', ['upsample.'], upsample)
    add('conv_last', ['conv_last.'], _conv3x3(pixels, NUM_FEAT, cin))
    return report
