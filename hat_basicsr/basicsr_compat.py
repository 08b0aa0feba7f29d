"""Fixes for running PyPI BasicSR 1.4.2 on today's stack (torch >= 2.6, torchvision >= 0.17,
numpy 2, Python 3.11). Every fix says what breaks without it; tests/test_compat.py proves each.

`apply()` runs on `import hat_basicsr`, before anything imports basicsr, and is idempotent.
"""
import importlib
import sys
import types


def _provide_torchvision_functional_tensor() -> None:
    """basicsr/data/degradations.py imports `torchvision.transforms.functional_tensor`, removed in
    torchvision 0.17; since basicsr/__init__.py imports everything, `import basicsr` fails. The one
    function it uses, rgb_to_grayscale, lives in torchvision.transforms.functional."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
        return
    except ImportError:
        pass
    from torchvision.transforms import functional
    shim = types.ModuleType(name, 'hat_basicsr shim: torchvision.transforms.functional_tensor was removed in 0.17')
    shim.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[name] = shim


def apply() -> None:
    _provide_torchvision_functional_tensor()
