"""Package faces that import their modules on first use (PEP 562), so that ``wsca analyze`` and the
CLI's parser do not pay for Flax, IFA or MID."""

from __future__ import annotations

import importlib


def attach(package: str, names: dict[str, str]):
    """``(__getattr__, __dir__, __all__)`` for ``package``, whose public ``names`` live in its modules
    (``{name: module}``); a name is imported from its module when first asked for."""

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__():
        return sorted(names)

    return __getattr__, __dir__, sorted(names)
