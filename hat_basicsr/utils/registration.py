"""Registering into BasicSR's registries without tripping over host repositories."""

from typing import Callable, TypeVar

from hat_basicsr.errors import RegistryClashError

T = TypeVar('T')


def _origin(obj) -> str:
    return f'{getattr(obj, "__module__", "?")}.{getattr(obj, "__qualname__", repr(obj))}'


def register_once(registry) -> Callable[[T], T]:
    """Class decorator: register under the class name; re-importing (or reloading) is a no-op, and a
    different class already registered under that name stops with an explanation."""

    def decorator(obj: T) -> T:
        name = obj.__name__
        existing = registry._obj_map.get(name)
        if existing is not None and existing is not obj and _origin(existing) != _origin(obj):
            raise RegistryClashError(
                f"BasicSR's {registry._name} already holds a different '{name}' ({_origin(existing)}), so "
                f'hat_basicsr cannot register its own ({_origin(obj)}). Either remove or rename the other '
                f"'{name}' (for example, delete the host repository's copy of the HAT files or rename its "
                f'class), or keep using it and do not import hat_basicsr in the same process.'
            )
        registry._obj_map[name] = obj
        return obj

    return decorator
