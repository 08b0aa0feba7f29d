"""HAT for BasicSR.

Importing this package makes `import basicsr` work on today's stack (see basicsr_compat) and
registers HAT's architecture, models and datasets into BasicSR's registries, so a host BasicSR
repository can use `type: HAT` after a plain `import hat_basicsr`.
"""

from hat_basicsr import basicsr_compat

basicsr_compat.apply()

# Imported for their registrations into ARCH_REGISTRY, DATASET_REGISTRY and MODEL_REGISTRY.
from hat_basicsr import archs, data, models  # noqa: E402, F401
from hat_basicsr.archs.hat_arch import HAT  # noqa: E402
from hat_basicsr.version import __version__  # noqa: E402

__all__ = ['HAT', '__version__']
