"""Rule kinds, one module per family. Importing this package imports each of its modules, found
with pkgutil, and so registers every kind under its `name` (base.RuleKind.registry)."""

import importlib
import pkgutil


def _import_every_module() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_import_every_module()
