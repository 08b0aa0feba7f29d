"""HAT: Hybrid Attention Transformer (Chen et al., CVPR 2023).

Module names follow the paper's figure (HAT -> RHAG -> HAB / OCAB -> CAB, WindowAttention) and the
state-dict layout of the authors' release, so released checkpoints load unchanged. Unlike the
release, the network pads any input size itself and runs attention through torch's fused
`scaled_dot_product_attention` (switchable back to the release's arithmetic with `attn_impl`),
and it exports through torch.export with symbolic batch, height and width (the padding and the
seam handling branch on no size; see hat_basicsr.utils.onnx_deploy, and hat_export for what the
exporter asks of HAT).

Shifted blocks never build a (num_windows, heads, N, N) bias-plus-mask tensor: after the cyclic
shift only the windows of the last row and the last column straddle the wrap-around seam, and
there are just three distinct masks (last column, last row, corner). Interior windows attend
with the bias alone, the seam windows with the bias plus their mask. (An exported graph does
build it, once per shifted block: see over_seam_regions.)
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from hat_basicsr.archs.attention import (
    ATTN_IMPLS,
    attention,
    batched_bias,
    check_attn_impl,
    relative_bias,
    relative_position_index_oca,
    relative_position_index_sa,
)
from hat_basicsr.archs.hat_config import HAT_OPTIONS, NUM_FEAT, overlap_window_size, validate_hat_arguments
from hat_basicsr.archs.hat_export import HATExport
from hat_basicsr.utils.option_spec import Section
from hat_basicsr.utils.registration import register_once

from basicsr.archs.arch_util import Upsample, to_2tuple, trunc_normal_
from basicsr.utils.registry import ARCH_REGISTRY

Size2 = Tuple[int, int]
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
# The release fills masked attention logits with -100 (not -inf); kept for identical outputs.
SHIFT_MASK_FILL = -100.0
# In inference the reconstruction head runs in horizontal strips of about this many input pixels;
# unstripped, its last 256-channel convolution output (at half the output size, x4) and the
# pixel-shuffled copy of it are the largest tensors of the fast path.
RECONSTRUCTION_STRIP_PIXELS = 1 << 15


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad an NCHW tensor right/bottom to a multiple of `multiple`.

    Reflect padding, as the release's model wrapper does. Reflection needs the pad to be smaller
    than the side, so a side too short for one reflection is reflected repeatedly (like
    numpy.pad's 'reflect' mode), and a side of a single pixel is replicated. Written as one gather
    per side, so an exported graph pads every size the same way; only outside export is a side
    that needs no padding left alone.
    """
    for dim in (-2, -1):
        side = x.shape[dim]
        length = (side + multiple - 1) // multiple * multiple
        if torch.compiler.is_exporting() or length != side:
            x = x.index_select(dim, reflect_indices(side, length, x.device))
    return x


def reflect_indices(side: int, length: int, device: torch.device) -> Tensor:
    """Source index of each of `length` positions along a side of `side` pixels, reflected repeatedly.

    Repeated reflection about the last and first pixel is a triangular wave of period 2 (side - 1);
    a single pixel (period 0) is repeated, the period clamped to 1 so the formula still gives 0.
    """
    positions = torch.arange(length, device=device)
    phase = positions % positions.new_full((), torch.sym_max(2 * side - 2, 1))  # a tensor: exports symbolically
    return (side - 1) - (phase - (side - 1)).abs()


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """(B, H, W, C) -> (B * num_windows, window_size**2, C), windows in row-major order."""
    return rearrange(x, 'b (nh wh) (nw ww) c -> (b nh nw) (wh ww) c', wh=window_size, ww=window_size)


def shift_window_mask(height: int, width: int, window_size: int, shift_size: int) -> Tensor:
    """Additive mask (num_windows, N, N) that stops attention across the seams of a cyclic shift."""
    region = torch.zeros(height, width)
    bounds = (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None))
    for label, (rows, cols) in enumerate((r, c) for r in bounds for c in bounds):
        region[rows, cols] = label
    region_windows = window_partition(region[None, :, :, None], window_size).squeeze(-1)
    different = region_windows[:, None, :] != region_windows[:, :, None]
    return torch.zeros(different.shape).masked_fill_(different, SHIFT_MASK_FILL)


def build_seam_masks(window_size: int, shift_size: int) -> Tensor:
    """The three distinct shift masks (3, N, N): last-column, last-row and corner windows.

    They do not depend on the image size: the region boundaries of a cyclic shift only cut the
    last window row and column, so they are read off a 2 x 2-window image. Every other window's
    mask is all zeros.
    """
    masks = shift_window_mask(2 * window_size, 2 * window_size, window_size, shift_size)
    return masks[1:]  # windows in row-major order: interior, right column, bottom row, corner


def over_seam_regions(
    windows: Tensor, masks: Optional[Tensor], fn: Callable[[Tensor, Optional[Tensor]], Tensor]
) -> Tensor:
    """fn(region, mask) over a window grid (B, nh, nw, ...), reassembled on the grid.

    Without masks fn sees the whole grid with mask None. With seam masks (a shifted block) it sees
    the interior windows with None and the last column, last row and corner each with their own
    (N, N) mask, so no per-window mask is ever built. While exporting, where a region may be empty
    for some sizes and slicing by size would fix the graph to one, fn sees the whole grid with
    per-window masks instead (see per_window_masks).
    """
    if masks is None:
        return fn(windows, None)
    if torch.compiler.is_exporting():
        return fn(windows, per_window_masks(masks, windows.shape[1], windows.shape[2]))
    all_but_last, last = slice(None, -1), slice(-1, None)
    grid_masks = ((None, masks[0]), (masks[1], masks[2]))  # [row][column], as build_seam_masks orders them
    rows = []
    for row_slice, row_masks in zip((all_but_last, last), grid_masks):
        cols = []
        for col_slice, mask in zip((all_but_last, last), row_masks):
            region = windows[:, row_slice, col_slice]
            if region.numel():
                cols.append(fn(region, mask))
        if cols:
            rows.append(torch.cat(cols, dim=2))
    return torch.cat(rows, dim=1)


def per_window_masks(masks: Tensor, rows: int, cols: int) -> Tensor:
    """The seam masks (3, N, N) spread over a rows x cols window grid: (rows * cols, 1, N, N).

    Each window's mask is picked by index arithmetic (2 * in-last-row + in-last-column), which
    holds for every grid size, one window included.
    """
    last_row = (torch.arange(rows, device=masks.device) == rows - 1).long()
    last_col = (torch.arange(cols, device=masks.device) == cols - 1).long()
    kind = (2 * last_row[:, None] + last_col[None, :]).reshape(-1)
    return torch.cat([masks.new_zeros(1, *masks.shape[1:]), masks]).index_select(0, kind)[:, None]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate over channels (RCAN's channel attention)."""

    def __init__(self, dim: int, squeeze_factor: int):
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(dim, dim // squeeze_factor, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim // squeeze_factor, dim, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention(x)


class CAB(nn.Module):
    """Channel attention block: the convolutional branch that runs beside window attention."""

    def __init__(self, dim: int, compress_ratio: int, squeeze_factor: int):
        super().__init__()
        self.cab = nn.Sequential(
            nn.Conv2d(dim, dim // compress_ratio, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(dim // compress_ratio, dim, 3, 1, 1),
            ChannelAttention(dim, squeeze_factor=squeeze_factor),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.cab(x)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside ws x ws windows with a relative-position bias."""

    def __init__(
        self,
        dim: int,
        *,
        window_size: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        attn_impl: str = ATTN_IMPLS[0],
    ):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.attn_impl = attn_impl

    def forward(self, x: Tensor, rpi: Tensor, masks: Optional[Tensor] = None) -> Tensor:
        """x: (B, nh, nw, N, C) windows on their grid; masks: seam masks of a shifted block, or None.

        Regions are split before the qkv projection, so only one region's q, k, v exist at a time
        and, being slices of its own projection, need no copies to reach the attention kernel.
        """
        bias = relative_bias(self.relative_position_bias_table, rpi)
        dropout_p = self.attn_drop if self.training else 0.0

        def attend(region: Tensor, mask: Optional[Tensor]) -> Tensor:
            q, k, v = rearrange(
                self.qkv(region), 'b nh nw n (three h d) -> three (b nh nw) h n d', three=3, h=self.num_heads
            )
            out = attention(q, k, v, batched_bias(bias, mask, region.shape[0]), self.scale, dropout_p, self.attn_impl)
            return rearrange(out, '(b nh nw) h n d -> b nh nw n (h d)', b=region.shape[0], nh=region.shape[1])

        return self.proj_drop(self.proj(over_seam_regions(x, masks, attend)))


class HAB(nn.Module):
    """Hybrid attention block: (shifted) window attention plus a scaled CAB, then an MLP."""

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        window_size: int,
        shift_size: int,
        compress_ratio: int,
        squeeze_factor: int,
        conv_scale: float,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: Optional[float],
        drop: float,
        attn_drop: float,
        drop_path: float,
        norm_layer: type = nn.LayerNorm,
        attn_impl: str = ATTN_IMPLS[0],
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.conv_scale = conv_scale
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim,
            window_size=window_size,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
            attn_impl=attn_impl,
        )
        self.conv_block = CAB(dim, compress_ratio=compress_ratio, squeeze_factor=squeeze_factor)
        self.drop_path = StochasticDepth(drop_path, mode='row')
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, hidden_dim=int(dim * mlp_ratio), drop=drop)

    def forward(self, x: Tensor, x_size: Size2, rpi_sa: Tensor, seam_masks: Optional[Tensor]) -> Tensor:
        height, width = x_size
        shortcut = x
        x = rearrange(self.norm1(x), 'b (h w) c -> b h w c', h=height)
        conv_x = rearrange(self.conv_block(rearrange(x, 'b h w c -> b c h w')), 'b c h w -> b (h w) c')
        if self.shift_size:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
        grid = dict(wh=self.window_size, ww=self.window_size)
        # Rebinding x drops the normalised (and rolled) tokens: only their window copy lives on.
        x = rearrange(x, 'b (nh wh) (nw ww) c -> b nh nw (wh ww) c', **grid)
        x = rearrange(
            self.attn(x, rpi_sa, seam_masks if self.shift_size else None),
            'b nh nw (wh ww) c -> b (nh wh) (nw ww) c',
            **grid,
        )
        if self.shift_size:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = shortcut + self.drop_path(rearrange(x, 'b h w c -> b (h w) c')) + conv_x * self.conv_scale
        return x + self.drop_path(self.mlp(self.norm2(x)))


class OCAB(nn.Module):
    """Overlapping cross-attention block: window queries attend to enlarged, overlapping windows."""

    def __init__(
        self,
        dim: int,
        *,
        window_size: int,
        overlap_ratio: float,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        mlp_ratio: float = 2.0,
        norm_layer: type = nn.LayerNorm,
        attn_impl: str = ATTN_IMPLS[0],
    ):
        super().__init__()
        self.window_size = window_size
        self.overlap_window_size = overlap_window_size(window_size, overlap_ratio)
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.norm1 = norm_layer(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((window_size + self.overlap_window_size - 1) ** 2, num_heads)
        )
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, hidden_dim=int(dim * mlp_ratio))
        self.attn_impl = attn_impl

    def forward(self, x: Tensor, x_size: Size2, rpi_oca: Tensor) -> Tensor:
        x = self.proj(self.attend(x, x_size, rpi_oca)) + x
        return x + self.mlp(self.norm2(x))

    def attend(self, x: Tensor, x_size: Size2, rpi_oca: Tensor) -> Tensor:
        """Overlapping cross-attention of the normalised tokens, (B, H*W, C) -> (B, H*W, C).

        A method of its own, and `del` inside, so that in inference each large temporary (the qkv
        projection, the padded and the unfolded keys and values, 2.25x the tokens each) is freed
        as soon as it is used instead of living on through the MLP.
        """
        height, dim = x_size[0], x.shape[-1]
        size, overlap = self.window_size, self.overlap_window_size
        qkv = rearrange(self.qkv(self.norm1(x)), 'b (h w) c -> b h w c', h=height)
        q = rearrange(
            qkv[..., :dim], 'b (nh wh) (nw ww) (h d) -> (b nh nw) h (wh ww) d', wh=size, ww=size, h=self.num_heads
        )
        # Keys and values of overlapping windows over a zero border: zeros after the qkv projection,
        # exactly as in the release. The layout keeps the head dimension contiguous, which the
        # fused kernels need.
        border = (overlap - size) // 2
        kv = F.pad(qkv[..., dim:], (0, 0, border, border, border, border))
        del qkv
        k, v = rearrange(
            kv.unfold(1, overlap, size).unfold(2, overlap, size),
            'b nh nw (two h d) oh ow -> two (b nh nw) h (oh ow) d',
            two=2,
            h=self.num_heads,
        )
        del kv
        bias = relative_bias(self.relative_position_bias_table, rpi_oca)
        out = attention(q, k, v, bias[None], self.scale, 0.0, self.attn_impl)
        return rearrange(
            out, '(b nh nw) h (wh ww) d -> b (nh wh nw ww) (h d)', nh=height // size, nw=x_size[1] // size, wh=size
        )


class AttenBlocks(nn.Module):
    """The body of an RHAG: its HABs, then one OCAB (built by HAT, which states their options once)."""

    def __init__(self, blocks: Sequence[HAB], overlap_attn: OCAB):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.overlap_attn = overlap_attn
        self.grad_checkpointing = False

    def forward(
        self, x: Tensor, x_size: Size2, rpi_sa: Tensor, rpi_oca: Tensor, seam_masks: Optional[Tensor]
    ) -> Tensor:
        use_checkpoint = self.grad_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            if use_checkpoint:
                x = checkpoint(block, x, x_size, rpi_sa, seam_masks, use_reentrant=False)
            else:
                x = block(x, x_size, rpi_sa, seam_masks)
        if use_checkpoint:
            return checkpoint(self.overlap_attn, x, x_size, rpi_oca, use_reentrant=False)
        return self.overlap_attn(x, x_size, rpi_oca)


class RHAG(nn.Module):
    """Residual hybrid attention group: AttenBlocks, a 3x3 conv, and a long skip connection."""

    def __init__(self, residual_group: AttenBlocks, *, dim: int, resi_connection: str):
        super().__init__()
        self.residual_group = residual_group
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1) if resi_connection == '1conv' else nn.Identity()

    def forward(
        self, x: Tensor, x_size: Size2, rpi_sa: Tensor, rpi_oca: Tensor, seam_masks: Optional[Tensor]
    ) -> Tensor:
        y = self.residual_group(x, x_size, rpi_sa, rpi_oca, seam_masks)
        y = rearrange(y, 'b (h w) c -> b c h w', h=x_size[0])
        return rearrange(self.conv(y), 'b c h w -> b (h w) c') + x


class PatchEmbed(nn.Module):
    """One token per pixel, optionally layer-normalised (patch size 1, as in every HAT)."""

    def __init__(self, embed_dim: int, norm_layer: Optional[type]):
        super().__init__()
        self.norm = norm_layer(embed_dim) if norm_layer is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(rearrange(x, 'b c h w -> b (h w) c'))


@register_once(ARCH_REGISTRY)
class HAT(HATExport, nn.Module):
    """Hybrid Attention Transformer for single-image super-resolution.

    Accepts every constructor argument of the authors' release with the same defaults. Inputs of
    any size are padded to a multiple of the window and the output is cropped to scale x input.
    `use_checkpoint` enables gradient checkpointing of every block (the release ignores it).
    `attn_impl` picks the attention kernel: 'sdpa' (fused, default) or 'reference' (the release's
    arithmetic); see `set_attn_impl`. float16 is refused (use bfloat16). Built on the meta device,
    it is materialised with `to_empty()` and `init_non_persistent_buffers()`, then its weights.

    Args:
        img_size: Training patch size (int or (height, width)); sizes `absolute_pos_embed` with
            `ape`, and a size equal to the window disables shifting, as in the release.
        patch_size: Pixels per token; 1 in every HAT.
        in_chans: Image channels (3 subtracts the DIV2K mean, others none).
        embed_dim: Channels C of the deep features.
        depths: HABs per RHAG, one entry per RHAG.
        num_heads: Attention heads per RHAG (each must divide embed_dim).
        window_size: Side M of the attention windows.
        compress_ratio: The paper's beta: CAB's first convolution compresses C to C / beta channels.
        squeeze_factor: The channel attention's squeeze factor: its gate pools C to C / squeeze.
        conv_scale: The paper's alpha: the weight of the CAB branch added to window attention in a HAB.
        overlap_ratio: The paper's gamma: OCAB's keys come from overlapping windows of size
            M_o = (1 + gamma) M (see hat_config.overlap_window_size); gamma M must be even.
        mlp_ratio: Hidden channels of each MLP, as a multiple of embed_dim.
        qkv_bias: Whether the q, k, v projections have a bias.
        qk_scale: Attention logit scale; None for head_dim ** -0.5.
        drop_rate: Dropout after the patch embedding, the MLPs and the attention projection.
        attn_drop_rate: Dropout of the attention weights.
        drop_path_rate: Stochastic depth, rising linearly over the HABs to this rate.
        norm_layer: Normalisation layer class (LayerNorm).
        ape: Add a learned absolute position embedding (fixes the input size to img_size).
        patch_norm: Normalise the tokens after the patch embedding.
        use_checkpoint: Gradient checkpointing of every block.
        upscale: Scale factor: 1, 3 or a power of two.
        img_range: Pixel range the network works in (inputs are scaled by it).
        upsampler: Reconstruction head; only 'pixelshuffle' builds one.
        resi_connection: '1conv' (a 3x3 conv closes every RHAG and the body) or 'identity'.
        attn_impl: 'sdpa' or 'reference' (see set_attn_impl).
    """

    OPTIONS: ClassVar[Section] = HAT_OPTIONS

    @classmethod
    def check_arguments(cls, options: Mapping[str, Any]) -> None:
        """validate_hat_arguments on an option file's arguments, the missing ones at their defaults:
        the checks of the constructor, without building anything."""
        defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(cls).parameters.items()
            if parameter.default is not parameter.empty
        }
        validate_hat_arguments({**defaults, **options})

    def __init__(
        self,
        img_size: Union[int, Sequence[int]] = 64,
        patch_size: Union[int, Sequence[int]] = 1,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 7,
        compress_ratio: int = 3,
        squeeze_factor: int = 30,
        conv_scale: float = 0.01,
        overlap_ratio: float = 0.5,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: type = nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        upscale: int = 2,
        img_range: float = 1.0,
        upsampler: str = '',
        resi_connection: str = '1conv',
        attn_impl: str = 'sdpa',
    ):
        super().__init__()
        validate_hat_arguments(locals())
        img_size, patch_size = tuple(to_2tuple(img_size)), tuple(to_2tuple(patch_size))
        self.window_size = window_size
        self.upscale = upscale
        self.img_range = img_range
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.ape = ape
        patches_resolution = (img_size[0] // patch_size[0], img_size[1] // patch_size[1])
        # The release disables shifting when the training size equals the window.
        shift_size = 0 if min(patches_resolution) <= window_size else window_size // 2
        self.shift_size = shift_size
        self.overlap_window_size = overlap_window_size(window_size, overlap_ratio)
        self._register_derived_buffers()

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, norm_layer if patch_norm else None)
        if ape:
            self.absolute_pos_embed = nn.Parameter(
                torch.zeros(1, patches_resolution[0] * patches_resolution[1], embed_dim)
            )
            trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.patches_resolution = patches_resolution
        self.pos_drop = nn.Dropout(drop_rate)
        drop_path = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            start = sum(depths[:i])
            # Every other HAB is shifted; each RHAG ends with an OCAB.
            habs = [
                HAB(
                    embed_dim,
                    num_heads=heads,
                    window_size=window_size,
                    shift_size=0 if j % 2 == 0 else shift_size,
                    compress_ratio=compress_ratio,
                    squeeze_factor=squeeze_factor,
                    conv_scale=conv_scale,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=drop_path[start + j],
                    norm_layer=norm_layer,
                    attn_impl=attn_impl,
                )
                for j in range(depth)
            ]
            ocab = OCAB(
                embed_dim,
                window_size=window_size,
                overlap_ratio=overlap_ratio,
                num_heads=heads,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                mlp_ratio=mlp_ratio,
                norm_layer=norm_layer,
                attn_impl=attn_impl,
            )
            self.layers.append(RHAG(AttenBlocks(habs, ocab), dim=embed_dim, resi_connection=resi_connection))
        self.norm = norm_layer(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1) if resi_connection == '1conv' else nn.Identity()
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, NUM_FEAT, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(upscale, NUM_FEAT)
        self.conv_last = nn.Conv2d(NUM_FEAT, in_chans, 3, 1, 1)
        self.reconstruction_strip_pixels = RECONSTRUCTION_STRIP_PIXELS
        self.apply(self._init_weights)
        self.set_grad_checkpointing(use_checkpoint)
        self.attn_impl = attn_impl

    def _register_derived_buffers(
        self, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None
    ) -> None:
        """The buffers computed from the hyperparameters alone: the input mean and the seam masks
        (non-persistent) and the relative-position indices (in state dicts, as in the release's).
        Float buffers get `dtype`; None keeps torch's defaults, as at construction."""
        mean = DIV2K_RGB_MEAN if self.in_chans == 3 else (0.0,)
        self.register_buffer('mean', torch.tensor(mean, device=device, dtype=dtype).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('relative_position_index_SA', relative_position_index_sa(self.window_size).to(device))
        self.register_buffer(
            'relative_position_index_OCA',
            relative_position_index_oca(self.window_size, self.overlap_window_size).to(device),
        )
        masks = build_seam_masks(self.window_size, self.shift_size) if self.shift_size else None
        self.register_buffer(
            'shift_seam_masks', None if masks is None else masks.to(device=device, dtype=dtype), persistent=False
        )

    def init_non_persistent_buffers(self) -> None:
        """Recompute the derived buffers on the weights' device and in their dtype. A network built on
        the meta device and materialised with `to_empty()` holds garbage there, and state dicts do not
        hold the non-persistent ones: call this after `to_empty()` (as timm's models offer), then load
        the weights."""
        weight = self.conv_first.weight
        self._register_derived_buffers(weight.device, weight.dtype)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them."""
        self.grad_checkpointing = enable
        for layer in self.layers:
            layer.residual_group.grad_checkpointing = enable

    def set_attn_impl(self, attn_impl: str) -> None:
        """Run attention through 'sdpa' (torch's fused kernels; default) or 'reference' (the release's
        matmul-softmax-matmul, kept as the ground truth). Both give the release's outputs in fp32."""
        check_attn_impl(attn_impl)
        self.attn_impl = attn_impl
        for module in self.modules():
            if isinstance(module, (WindowAttention, OCAB)):
                module.attn_impl = attn_impl

    def _refuse_float16(self, x: Tensor) -> None:
        """HAT's activations leave float16's range (peers mark fp16 unsupported): fail loudly instead
        of returning NaNs or black images."""
        device = x.device.type
        autocast_fp16 = (
            torch.amp.is_autocast_available(device)
            and torch.is_autocast_enabled(device)
            and torch.get_autocast_dtype(device) == torch.float16
        )
        if autocast_fp16 or torch.float16 in (x.dtype, self.conv_first.weight.dtype):
            raise ValueError(
                'HAT does not support float16 (its activations overflow fp16); use bfloat16 '
                '(torch.autocast(device_type, dtype=torch.bfloat16)) or float32'
            )

    def forward_features(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        x = self.patch_embed(x)
        if self.ape:
            if (height, width) != self.patches_resolution:
                raise ValueError(
                    f'HAT with ape=True only accepts inputs of img_size {self.patches_resolution} '
                    f'(after padding to the window), got {(height, width)}'
                )
            x = x + self.absolute_pos_embed
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(
                x,
                (height, width),
                self.relative_position_index_SA,
                self.relative_position_index_OCA,
                self.shift_seam_masks,
            )
        return rearrange(self.norm(x), 'b (h w) c -> b c h w', h=height)

    def reconstruct(self, features: Tensor) -> Tensor:
        """The upsampling head, (B, embed_dim, H, W) -> (B, in_chans, scale*H, scale*W).

        Without autograd it runs in horizontal strips of `reconstruction_strip_pixels` input pixels,
        so its largest activations (64 channels at the output size, and the pixel-shuffle copy)
        exist one strip at a time. Each strip carries a halo of one input row per 3x3 convolution
        of the head, which is at least each one's reach, so the output is the unstripped one.
        """
        head = lambda t: self.conv_last(self.upsample(self.conv_before_upsample(t)))
        height, width = features.shape[-2:]
        rows = max(1, self.reconstruction_strip_pixels // width)
        if features.requires_grad or torch.compiler.is_compiling() or height <= rows:
            return head(features)
        halo = sum(isinstance(m, nn.Conv2d) for m in (*self.conv_before_upsample, *self.upsample, self.conv_last))
        strips = []
        for top in range(0, height, rows):
            start, stop = max(top - halo, 0), min(top + rows + halo, height)
            keep = slice((top - start) * self.upscale, (min(top + rows, height) - start) * self.upscale)
            strips.append(head(features[..., start:stop, :])[..., keep, :])
        return torch.cat(strips, dim=-2)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f'HAT expects input of shape (batch, {self.in_chans}, height, width), got {tuple(x.shape)}'
            )
        self._refuse_float16(x)
        height, width = x.shape[-2:]
        mean = self.mean.to(x.dtype)
        x = pad_to_multiple((x - mean) * self.img_range, self.window_size)
        x = self.conv_first(x)
        x = self.reconstruct(self.conv_after_body(self.forward_features(x)) + x)
        x = x[..., : height * self.upscale, : width * self.upscale]
        return x / self.img_range + mean
