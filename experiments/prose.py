"""Prose rendered from records, so that text and tables cannot drift apart.

A template is Markdown with ``{{ expression }}`` fields; each expression is evaluated against a
namespace of helpers built from the experiment records (no builtins), and its value is written in.
Results files are rendered by their experiment scripts; generated sections of the README sit
between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` and are replaced by
:func:`update_section`. ``tests/test_results_text.py`` re-renders everything from the committed
records and fails when a committed text differs.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

FIELD = re.compile(r"\{\{(.+?)\}\}", re.S)


def render(template: str, namespace: dict) -> str:
    """Replace every ``{{ expr }}`` by ``str(eval(expr))`` in ``namespace`` (no builtins)."""
    def sub(m):
        return str(eval(m.group(1).strip(), {"__builtins__": {}}, namespace))  # noqa: S307 (our own templates)
    return FIELD.sub(sub, template)


def update_section(text: str, name: str, body: str) -> str:
    """Replace the generated section ``name`` of ``text`` (markers kept)."""
    start, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
    i, j = text.index(start) + len(start), text.index(end)
    return text[:i] + "\n" + body.strip("\n") + "\n" + text[j:]


def write_section(path: str, name: str, heading: str, body: str) -> None:
    """Rewrite the generated section ``name`` of the file ``path``; a new section (``heading`` and its
    markers) is appended when the file has none yet."""
    text = open(path).read()
    if f"<!-- generated:{name} -->" not in text:
        text += f"\n{heading}\n\n<!-- generated:{name} -->\n<!-- /generated:{name} -->\n"
    with open(path, "w") as f:
        f.write(update_section(text, name, body))


# ---- formatting helpers shared by the templates


def num(x, fmt: str = "{:.2f}") -> str:
    """A number, or 'n/a' for None/NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return fmt.format(x)


def ms(x, fmt: str = "{:.2f}") -> str:
    """'mean ± SD' over a Series (just the value for one)."""
    x = pd.Series(x).dropna().astype(float)
    if len(x) == 0:
        return "n/a"
    return (fmt + " ± " + fmt).format(x.mean(), x.std(ddof=1)) if len(x) > 1 else fmt.format(x.mean())


def span(x, fmt: str = "{:.2f}") -> str:
    """'min-max' over a Series."""
    x = pd.Series(x).dropna().astype(float)
    return "n/a" if len(x) == 0 else (fmt + "-" + fmt).format(x.min(), x.max())


def count(mask) -> str:
    """'k/n' of a boolean Series."""
    m = pd.Series(mask).dropna().astype(bool)
    return f"{int(m.sum())}/{len(m)}"


def plist(x, fmt: str = "{:.3f}") -> str:
    """Values as a comma-separated list."""
    return ", ".join(fmt.format(v) for v in pd.Series(x).dropna().astype(float))


def namespace(**extra) -> dict:
    """The helpers every template may use, plus ``extra`` (records, selectors ...)."""
    ns = {"num": num, "ms": ms, "span": span, "count": count, "plist": plist, "np": np, "len": len,
          "abs": abs, "min": min, "max": max, "round": round, "sorted": sorted, "list": list, "int": int,
          "float": float, "str": str, "sum": sum, "all": all, "any": any, "zip": zip}
    ns.update(extra)
    return ns
