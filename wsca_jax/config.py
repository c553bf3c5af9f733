"""Settings as frozen dataclasses: one default, one line of documentation and one constraint per field.

Every entry point takes one config (``AnalysisConfig``, ``IfaConfig``, ``MidConfig``, ``TrainConfig``)
built from :func:`setting` fields. A field's constraint is checked once, when the config is made
(the way scikit-learn's ``_parameter_constraints`` are), and a violation is one
:class:`~wsca_jax.errors.WscaInputError` line naming the command-line flag. The CLI generates its
flags from the same fields (``wsca_jax.cli.common.add_config_arguments``), so a flag's default, type,
choices and help can never disagree with the API's.

Adding an option is one field in a config section, plus its use::

    min_class_count: int = setting(5, "rows a class needs to be kept", at_least(1))
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np

from .errors import WscaInputError


@dataclass(frozen=True)
class Constraint:
    """A test of one value and the words that finish "must be ...": ``text``."""

    test: Callable[[Any], bool]
    text: str
    choices: tuple = ()

    def __call__(self, value) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False


def is_real(v) -> bool:
    """A finite real number (not a bool)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and bool(np.isfinite(v))


def is_integer(v) -> bool:
    """An integer (not a bool)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _plain(v):
    """Frozen, JSON-ready values: non-string iterables (lists, tuples, arrays, pandas indexes) as
    tuples of plain Python values, NumPy scalars as Python scalars; anything else unchanged."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (str, bytes, dict)) or v is None or not hasattr(v, "__iter__"):
        return v
    try:
        items = tuple(_plain(x) for x in v)
    except TypeError:
        return v
    return v if (isinstance(v, tuple) and all(a is b for a, b in zip(items, v))) else items


def boolean() -> Constraint:
    """True or False."""
    return Constraint(lambda v: isinstance(v, bool), "True or False")


def numbers(lo: float, *, open_lo: bool = False) -> Constraint:
    """A non-empty list of finite numbers above ``lo`` (``>= lo`` unless ``open_lo``)."""
    def test(v):
        return isinstance(v, tuple) and len(v) > 0 and all(is_real(x) and (x > lo if open_lo else x >= lo) for x in v)
    return Constraint(test, f"one or more finite numbers {'>' if open_lo else '>='} {lo:g}")


def integer_list(lo: int) -> Constraint:
    """A non-empty list of integers ``>= lo``."""
    return Constraint(lambda v: isinstance(v, tuple) and len(v) > 0 and all(is_integer(x) and x >= lo for x in v),
                      f"a list of integers >= {lo}")


def at_least(lo: int) -> Constraint:
    """An integer ``>= lo``."""
    return Constraint(lambda v: is_integer(v) and v >= lo, f"an integer >= {lo}")


def integers(lo: int, hi: int) -> Constraint:
    """An integer from ``lo`` to ``hi``."""
    return Constraint(lambda v: is_integer(v) and lo <= v <= hi, f"an integer from {lo} to {hi}")


def interval(lo: float | None, hi: float | None, *, open_lo: bool = False, open_hi: bool = False) -> Constraint:
    """A finite real number in the interval (``None``: unbounded on that side)."""
    def test(v):
        return (is_real(v) and (lo is None or (v > lo if open_lo else v >= lo))
                and (hi is None or (v < hi if open_hi else v <= hi)))
    if hi is None:
        text = f"a finite number {'>' if open_lo else '>='} {lo:g}"
    else:
        text = f"in {'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
    return Constraint(test, text)


def one_of(*choices) -> Constraint:
    """One of ``choices``."""
    return Constraint(lambda v: v in choices, "one of " + ", ".join(map(repr, choices)), tuple(choices))


def optional(c: Constraint) -> Constraint:
    """``None`` or what ``c`` accepts."""
    return Constraint(lambda v: v is None or c(v), f"None or {c.text}")


def names() -> Constraint:
    """A sequence of column names (strings)."""
    return Constraint(lambda v: not isinstance(v, str) and all(isinstance(s, str) and s for s in v),
                      "a list of column names")


def optional_name() -> Constraint:
    """``None`` or one column name."""
    return Constraint(lambda v: v is None or (isinstance(v, str) and bool(v)), "None or a column name")


def setting(default, doc: str, constraint: Constraint | None = None, *, flag: str | None = None,
            cli: bool = True, type: Callable | None = None, metavar: str | None = None):
    """A config field.

    Args:
      default: the one default (the API's, the CLI's, the demo's and the experiments').
      doc: one line for the API docs and the flag's help.
      constraint: checked when the config is made.
      flag: the command-line flag without ``--`` (default: the field name with ``-`` for ``_``).
      cli: False for settings the command line does not offer.
      type: the flag's value parser when the default does not show it (a ``None`` default);
        ``"names"`` for a comma-separated list of columns.
    """
    return field(default=default, metadata={"doc": doc, "constraint": constraint, "flag": flag, "cli": cli,
                                            "type": type, "metavar": metavar})


def section(cls):
    """A config field holding a section (a :class:`Config` subclass), defaulting to its defaults."""
    return field(default_factory=cls, metadata={"section": True})


def flag_of(f: dataclasses.Field) -> str:
    """``--flag`` of a field."""
    return "--" + (f.metadata.get("flag") or f.name.replace("_", "-"))


@dataclass(frozen=True)
class Config:
    """Base of every settings object: constraints checked on creation, ``to_dict``, flat replacement."""

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            plain = v if isinstance(v, Config) else _plain(v)
            if plain is not v:                        # lists, arrays, pandas indexes, NumPy scalars
                object.__setattr__(self, f.name, plain)
            c = f.metadata.get("constraint")
            if c is not None and not c(plain):
                name = flag_of(f) if f.metadata.get("cli", True) else f.name
                shown = (",".join(map(str, plain)) or "none") if isinstance(plain, tuple) else repr(plain)
                raise WscaInputError(f"{name} must be {c.text}, found {shown}")
        self.check()

    def check(self) -> None:
        """Constraints between fields (override); one ``WscaInputError`` line each."""

    def to_dict(self) -> dict:
        """Sections as nested dicts, tuples as lists (JSON-ready)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, Config) else list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict):
        """Inverse of :meth:`to_dict` (unknown keys are refused)."""
        known = {f.name: f for f in fields(cls)}
        bad = sorted(set(d) - set(known))
        if bad:
            raise WscaInputError(f"{cls.__name__}: unknown setting(s) {', '.join(bad)}")
        kw = {k: (known[k].default_factory.from_dict(v) if known[k].metadata.get("section") else v)
              for k, v in d.items()}
        return cls(**kw)

    def replace(self, **changes):
        """A copy with fields changed; a name may be any section's field (``bootstrap=0``)."""
        own = {f.name for f in fields(self)}
        direct = {k: v for k, v in changes.items() if k in own}
        rest = {k: v for k, v in changes.items() if k not in own}
        for f in fields(self):
            sub = direct.get(f.name, getattr(self, f.name))      # a section given whole, then its flat names
            if isinstance(sub, Config) and rest:
                mine = {k: v for k, v in rest.items() if k in flat_fields(type(sub))}
                if mine:
                    direct[f.name] = sub.replace(**mine)
                    rest = {k: v for k, v in rest.items() if k not in mine}
        if rest:
            raise WscaInputError(f"{type(self).__name__}: unknown setting(s) {', '.join(sorted(rest))}")
        return dataclasses.replace(self, **direct)


def flat_fields(cls) -> dict[str, dataclasses.Field]:
    """``{name: field}`` of every leaf setting of a config class, sections flattened."""
    out = {}
    for f in fields(cls):
        if f.metadata.get("section"):
            out.update(flat_fields(f.default_factory))
        else:
            out[f.name] = f
    return out


def with_deprecated_keywords(cls, config, settings: dict, where: str, renames: dict | None = None):
    """``config`` (default ``cls()``) with the flat keywords of the 0.8 API applied, warning once
    (``DeprecationWarning``, pointing at the entry point's caller); ``renames``: an old keyword ->
    ``(field name, conversion or None)``."""
    config = cls() if config is None else config
    if not isinstance(config, cls):
        article = "an" if cls.__name__[0] in "AEIOU" else "a"
        raise WscaInputError(f"config: expected {article} {cls.__name__}, found {type(config).__name__}")
    if not settings:
        return config
    warnings.warn(f"{where}: settings as keywords ({', '.join(sorted(settings))}) are deprecated; pass "
                  f"config={cls.__name__}().replace(...) (removed in 0.10)", DeprecationWarning, stacklevel=3)
    changes = {}
    for key, value in settings.items():
        name, convert = (renames or {}).get(key, (key, None))
        changes[name] = convert(value) if convert is not None else value
    return config.replace(**changes)


__all__ = ["Config", "Constraint", "at_least", "boolean", "integer_list", "integers", "flag_of", "flat_fields", "interval",
           "is_integer", "is_real", "numbers",
           "names", "one_of", "optional", "optional_name", "section", "setting", "with_deprecated_keywords"]
