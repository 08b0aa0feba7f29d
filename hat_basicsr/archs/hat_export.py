"""What the tools outside the arch ask of a HAT, answered next to the arch: the ONNX exporter
(hat_basicsr.utils.onnx_deploy.Exportable) and the weight loader
(hat_basicsr.utils.weights.DerivedState) know no HAT, they call these methods.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from torch import nn

from hat_basicsr.errors import OnnxError

# State-dict entries computed from the hyperparameters alone (persistent, as in the release's files).
DERIVED_STATE_KEYS = ('relative_position_index_SA', 'relative_position_index_OCA')


class HATExport:
    """Mixin of HAT (hat_arch.HAT) for export and weight loading; it reads HAT's `layers`, `ape`
    and `patches_resolution`."""

    def derived_state_keys(self) -> Tuple[str, ...]:
        """The relative-position indices: a checkpoint without them (converted or trimmed) still loads."""
        return DERIVED_STATE_KEYS

    def repeated_blocks(self) -> List[nn.Module]:
        """HABs and OCABs, the blocks every residual group repeats: the exporter traces each
        structure once instead of every block."""
        return [
            block
            for layer in self.layers
            for block in (*layer.residual_group.blocks, layer.residual_group.overlap_attn)
        ]

    def check_export_size(self, static: Optional[Tuple[int, int]]) -> None:
        """A HAT with an absolute position embedding only accepts its img_size, so only a static
        export at that size can give a graph."""
        if self.ape and tuple(static or ()) != tuple(self.patches_resolution):
            height, width = self.patches_resolution
            raise OnnxError(
                'a HAT with ape=True (absolute position embedding) only accepts its img_size '
                f'{(height, width)}: export it with --static {height} {width}'
            )
