"""Lazy package attributes (PEP 562): names a package exports without importing their modules up front.

Several packages keep their import free of torch or matplotlib this way (``vadkit``, ``vadkit.data``,
``vadkit.profiling``, ``vadkit.report``); this is the one implementation they share.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, names: Mapping[str, str],
                    namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``(__getattr__, __dir__)`` pair of ``package``.

    Args:
        package: the package's name, for the error message.
        names: exported name -> ``"module"`` (the attribute of the same name) or ``"module:attribute"``.
        namespace: the package's ``globals()``; a name is imported on first access and cached there.
    """

    def __getattr__(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = target.partition(":")
        value = getattr(importlib.import_module(module), attribute or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
