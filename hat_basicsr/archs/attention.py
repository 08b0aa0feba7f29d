"""Window attention's kernels and its relative-position bias (timm keeps these in layers/attention).

HAT's attention is softmax(scale q kᵀ + B) v with B a learned relative-position bias, gathered from
a (positions, heads) table through a fixed index (plus a seam mask in shifted blocks). It runs
through torch's fused `scaled_dot_product_attention` ('sdpa') or the release's own arithmetic
('reference'); `attention` is the one switch between them.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

ATTN_IMPLS = ('sdpa', 'reference')


def check_attn_impl(attn_impl: str) -> None:
    """Refuse an attention implementation other than ATTN_IMPLS, naming the choices."""
    if attn_impl not in ATTN_IMPLS:
        raise ValueError(f'HAT: invalid attn_impl: {attn_impl!r}; supported: {ATTN_IMPLS}')


def relative_position_index_sa(window_size: int) -> Tensor:
    """Index into a ((2ws-1)^2, heads) bias table for every (query, key) pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'))
    coords = coords.flatten(1)
    delta = (coords[:, :, None] - coords[:, None, :]) + (window_size - 1)
    return delta[0] * (2 * window_size - 1) + delta[1]


def relative_position_index_oca(window_size: int, overlap_window_size: int) -> Tensor:
    """Index into a ((ws+ows-1)^2, heads) table for (query in window, key in overlapping window).

    The offsets follow the release exactly, including the ones that come out negative and so
    wrap around to the end of the table: checkpoints were trained with this indexing.
    """
    grid = lambda n: torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing='ij')).flatten(1)
    delta = grid(overlap_window_size)[:, None, :] - grid(window_size)[:, :, None]
    delta = delta + (window_size - overlap_window_size + 1)
    return delta[0] * (window_size + overlap_window_size - 1) + delta[1]


def reference_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float, dropout_p: float) -> Tensor:
    """softmax(scale q k^T + bias) v with the release's arithmetic (and its autocast behaviour)."""
    attn = torch.softmax((q * scale) @ k.transpose(-2, -1) + bias, dim=-1)
    return (F.dropout(attn, dropout_p) if dropout_p else attn) @ v


def head_dim_multiple(q: Tensor) -> int:
    """Head size the fused CUDA kernels need: cuDNN wants a multiple of 8, mem-efficient 4 (fp32)
    or 8 (bf16); HAT's 30 fails both and would fall back to the unfused math kernel. CPU's flash
    kernel takes any size."""
    return 8 if q.is_cuda else 1


def sdpa_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float, dropout_p: float, multiple: Optional[int] = None
) -> Tensor:
    """softmax(scale q k^T + bias) v in one fused kernel that never stores the attention matrix.

    The bias is cast to q's dtype, which the fused kernels require; they add it to fp32 logits and
    take the softmax in fp32. q, k and v are zero-padded to a head size that is a multiple of
    `multiple` (default: what the device's kernels need): zero columns leave q k^T unchanged and are
    sliced off the output; the scale is passed explicitly, so padding does not change it.
    """
    head_dim = q.shape[-1]
    pad = -head_dim % (multiple or head_dim_multiple(q))
    if pad:
        q, k, v = (F.pad(t, (0, pad)) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout_p, scale=scale)
    return out[..., :head_dim] if pad else out


def attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float, dropout_p: float, impl: str) -> Tensor:
    """softmax(scale q k^T + bias) v for q, k, v (batch, heads, N, d) and a 4-D bias (1 or batch,
    heads, Nq, Nk); the one place the two attention implementations differ. An exported graph
    always states the arithmetic: the choice of a fused kernel is left to the runtime, and
    torch's export cannot decompose SDPA's output layout for symbolic sizes."""
    if impl == 'sdpa' and not torch.compiler.is_exporting():
        return sdpa_attention(q, k, v, bias, scale, dropout_p)
    return reference_attention(q, k, v, bias, scale, dropout_p)


def batched_bias(bias: Tensor, mask: Optional[Tensor], batch: int) -> Tensor:
    """The 4-D attention bias of `batch` images' windows: the (heads, N, N) position bias plus a
    seam mask, (N, N) for all windows alike or (windows, 1, N, N) per window (per_window_masks)."""
    if mask is None or mask.ndim == 2:
        return (bias if mask is None else bias + mask)[None]
    return (bias + mask).repeat(batch, 1, 1, 1)


def relative_bias(table: Tensor, rpi: Tensor) -> Tensor:
    """Gather a (positions, heads) bias table into a contiguous (heads, Nq, Nk) additive mask.

    Gathered in every forward (a small share of its time) rather than cached: a cache keyed on the
    table cannot see every way weights change (writes through `.data` as in BasicSR's EMA update,
    fused optimizer steps, memory freed and reused at the same address) and served stale biases.
    Gathering along the table's transpose gives the (heads, Nq, Nk) layout directly, contiguous as
    the fused kernels want their mask. `index_select` rather than indexing: its backward is an
    `index_add_`, cheaper on CPU than indexing's accumulating `index_put_`. It takes no negative
    indices, which the OCA index holds (see relative_position_index_oca), hence the modulo.
    """
    return table.t().index_select(1, rpi.reshape(-1) % table.shape[0]).view(-1, *rpi.shape)
