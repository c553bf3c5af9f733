"""What every sub-command shares: the one-line-error parser, flags generated from config fields, and
small argument helpers.

A sub-command module defines ``register(subparsers)`` (its flags, and ``set_defaults(handler=run)``; settings flags come from its config
class through :func:`add_config_arguments`) and ``run(args) -> int``. ``args`` is never written into:
values derived from it are computed into locals or into the config (:func:`config_from_args`).
"""

from __future__ import annotations

import argparse

from ..config import flag_of, flat_fields


class Parser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line (exit 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_parser(sub, name: str, help: str, example: str, description: str | None = None) -> argparse.ArgumentParser:
    """A sub-command parser with its example below the options and every default shown."""
    return sub.add_parser(name, help=help, description=description, epilog=example,
                          formatter_class=_Formatter)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Raw epilog (the examples keep their lines); every option's default appended to its help."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction,
                               argparse._VersionAction)):
            return text
        if action.required or action.default is None or "default" in text.lower():
            return text
        shown = "none" if action.default in ((), []) else _show(action.default)
        return f"{text} (default {shown})" if text else f"(default {shown})"


def _show(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)


def csv(s: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; None or empty -> ``[]``."""
    return [c.strip() for c in s.split(",") if c.strip()] if s else []


def _names(text: str) -> tuple[str, ...]:
    return tuple(csv(text))


def add_config_arguments(parser: argparse.ArgumentParser, cls, group: str | None = None):
    """One flag per CLI setting of config class ``cls`` (sections flattened): ``--flag`` with the
    field's type, default, choices and documentation. The flag's ``dest`` is the field name."""
    target = parser.add_argument_group(group) if group else parser
    for f in flat_fields(cls).values():
        if not f.metadata.get("cli", True):
            continue
        kind = f.metadata.get("type")
        kw = {"dest": f.name, "default": f.default, "help": f.metadata["doc"]}
        c = f.metadata.get("constraint")
        if isinstance(f.default, bool):
            kw.update(action="store_false" if f.default else "store_true")
        else:
            if kind == "names":
                kw.update(type=_names, metavar="COL,...")
            else:
                kw["type"] = kind or (str if f.default is None else type(f.default))
            choices = getattr(c, "choices", None)
            if choices:
                kw["choices"] = list(choices)
        if f.metadata.get("metavar"):
            kw["metavar"] = f.metadata["metavar"]
        target.add_argument(flag_of(f), **kw)
    return target


def config_from_args(cls, args, **overrides):
    """An instance of config class ``cls`` from the parsed flags (fields without a flag keep their
    defaults), with ``overrides`` (field name -> value) applied last."""
    values = {f.name: getattr(args, f.name) for f in flat_fields(cls).values()
              if f.metadata.get("cli", True) and hasattr(args, f.name)}
    return cls().replace(**{**values, **overrides})


def progress_enabled(args) -> bool:
    """Progress is on unless --quiet (results and 'wrote' lines print either way)."""
    return not getattr(args, "quiet", False)


def run_dataset(args, rec: dict):
    """The data a run was trained on (``--data-dir``/``--tfds-dir`` from ``args``): its source, split
    seed (runs before ``--split-seed`` drew the split with ``--seed``) and content fingerprint. With
    ``args.dataset`` (``wsca embed --dataset``) another image set of the run's shape instead -- a
    counterfactual copy, an external site: the fingerprint then differs by design, and a printed note
    says so instead of the refusal."""
    import os

    import numpy as np

    from ..training.data import prepare_dataset
    from ..training.data.sources import NAMED_DATASETS
    from ..training.data.tfds_builder import fingerprint
    from ..errors import require

    require(isinstance(rec.get("dataset_source"), str), f"--run {args.run}/run.json: no dataset_source")
    other = getattr(args, "dataset", None)
    if other is not None:
        other_source = other if other in NAMED_DATASETS else os.path.abspath(other)
        other = None if other_source == rec["dataset_source"] else other
    note = {}

    def check(d):
        was, now = rec.get("data_fingerprint"), fingerprint(d)
        if other is not None:
            shape = list(np.shape(d.images)[1:])
            require(shape == list(rec["image_shape"]), f"--dataset {other}: images {shape}, the run was trained on "
                                                       f"{list(rec['image_shape'])}; expected the run's image shape")
            if was is not None and was != now:
                note["text"] = (f"note: --dataset {other} is not the data the run was trained on ({rec['dataset_source']}; "
                                f"content fingerprint {now} != {was}): embedded as asked, with the run's weights")
            return
        require(was is None or was == now, f"--run {args.run}: the dataset {rec['dataset_source']} differs from the "
                                           f"one the run was trained on (content fingerprint {now} != {was})")
    split_seed = rec.get("split_seed")
    ds = prepare_dataset(other or rec["dataset_source"], args.data_dir, args.tfds_dir,
                         seed=rec["config"].get("seed", 0) if split_seed is None else split_seed, check=check)
    if "text" in note:
        print(note["text"])
    return ds