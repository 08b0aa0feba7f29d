"""Architectures, registered into basicsr's ARCH_REGISTRY on import (one per *_arch.py file)."""

from hat_basicsr.archs import hat_arch  # noqa: F401
