"""HAT for BasicSR.

Importing this package makes `import basicsr` work on today's stack (see basicsr_compat) and
registers HAT's architecture, models and datasets into BasicSR's registries, so a host BasicSR
repository can use `type: HAT` after a plain `import hat_basicsr`. It leaves how BasicSR's
train_pipeline starts and resumes a run as it is: the experiment lock and the resume policy are
installed by hat_basicsr.train, or by a host's train script calling
hat_basicsr.training_policy.install_training_policy().

In a process started as one of the package's own programs (`hat-basicsr`, `python -m
hat_basicsr.train|test|demo`, the benchmarks; see entry_points) the import first applies the CPU
thread policy (utils/threads), before torch loads; the `hat-basicsr` script then parses its
arguments and calls load() itself, so its --help and argument errors need no torch. A plain
`import hat_basicsr` elsewhere changes no thread setting.
"""

from hat_basicsr.entry_points import LOADS_AFTER_PARSING, entry_point
from hat_basicsr.utils.threads import apply_thread_policy
from hat_basicsr.version import __version__

__all__ = ['HAT', '__version__', 'load']


def load() -> None:
    """Apply the compatibility fixes and register HAT into BasicSR (idempotent)."""
    from hat_basicsr import basicsr_compat

    basicsr_compat.apply()
    # Imported for their registrations into ARCH_REGISTRY, DATASET_REGISTRY and MODEL_REGISTRY.
    from hat_basicsr import archs, data, models  # noqa: F401


def __getattr__(name: str):
    """`hat_basicsr.HAT`, loading the package first where an entry point deferred it."""
    if name == 'HAT':
        load()
        from hat_basicsr.archs.hat_arch import HAT

        return HAT
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


_entry_point = entry_point()
if _entry_point is not None:
    apply_thread_policy()
if _entry_point not in LOADS_AFTER_PARSING:
    load()
