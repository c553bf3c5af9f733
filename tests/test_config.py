"""Settings objects (wsca_jax.config): one default per setting, shared by the API and the CLI;
constraints checked when a config is made, in one-line messages naming the flag."""

import argparse
import dataclasses
import warnings

import numpy as np
import pytest

import wsca_jax as wsca
from wsca_jax import cli
from wsca_jax.analysis.config import AnalysisConfig
from wsca_jax.config import flag_of, flat_fields
from wsca_jax.errors import WscaInputError


def _subparsers(parser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _configured():
    """(sub-command, its parser, its config class) for every sub-command whose flags come from a config."""
    subs = _subparsers(cli.build_parser())
    out = [(m.__name__.rsplit(".", 1)[1], m.CONFIG) for m in cli.SUBCOMMANDS if hasattr(m, "CONFIG")]
    assert ("analyze", AnalysisConfig) in out
    return [(name, subs[name], cls) for name, cls in out]


@pytest.mark.parametrize("name, parser, cls", _configured(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_cli_default_and_choice_is_the_configs(name, parser, cls):
    """The flag of every CLI setting has the config field's default, choices, type and help; a flag
    given on the command line reaches the config unchanged."""
    actions = {a.dest: a for a in parser._actions}
    fields = [f for f in flat_fields(cls).values() if f.metadata.get("cli", True)]
    assert fields
    for f in fields:
        a = actions[f.name]
        assert a.option_strings == [flag_of(f)], f.name
        assert a.default == f.default, f"{name} {flag_of(f)}: CLI default {a.default!r} != config {f.default!r}"
        choices = getattr(f.metadata.get("constraint"), "choices", ())
        assert list(a.choices or []) == list(choices), f.name
        assert a.help == f.metadata["doc"] and a.help, f.name
    assert cls() == cls().replace(**{f.name: actions[f.name].default for f in fields})


def test_analyze_flags_parse_into_the_config():
    sub = _subparsers(cli.build_parser())["analyze"]
    args = sub.parse_args(["--primary", "y", "--out", "o", "--bootstrap", "7", "--C", "0.5", "--tasks", "a,b",
                           "--ci-method", "bca", "--memory-gb", "2"])
    from wsca_jax.cli.common import config_from_args
    c = config_from_args(AnalysisConfig, args)
    assert (c.resampling.bootstrap, c.probe.C, c.encoding.tasks, c.inference.ci_method, c.probe.memory_gb) == \
        (7, 0.5, ("a", "b"), "bca", 2.0)
    assert c.resampling.permutations == AnalysisConfig().resampling.permutations == 200


def test_one_default_per_setting_everywhere():
    """The bootstrap and permutation counts are 200 in the API, the CLI and analyze's signature has no
    settings of its own (they all come from AnalysisConfig)."""
    import inspect
    c = AnalysisConfig()
    assert c.resampling.bootstrap == 200 and c.resampling.permutations == 200
    params = inspect.signature(wsca.analyze).parameters
    assert not set(params) & set(flat_fields(AnalysisConfig))
    sub = _subparsers(cli.build_parser())["analyze"]
    d = {a.dest: a.default for a in sub._actions}
    assert d["bootstrap"] == d["permutations"] == 200


def test_flat_names_are_unique_across_sections():
    """``replace(name=...)`` finds a field by its own name, so no name may appear in two sections."""
    names = []

    def walk(cls):
        for f in dataclasses.fields(cls):
            walk(f.default_factory) if f.metadata.get("section") else names.append(f.name)
    walk(AnalysisConfig)
    assert len(names) == len(set(names)) == len(flat_fields(AnalysisConfig))


@pytest.mark.parametrize("change, message", [
    ({"bootstrap": -1}, "--bootstrap must be an integer >= 0, found -1"),
    ({"alpha": 1.0}, "--alpha must be in (0, 1), found 1.0"),
    ({"alpha": float("nan")}, "--alpha must be in (0, 1), found nan"),
    ({"heads": "both"}, "--heads must be one of 'centered', 'raw', found 'both'"),
    ({"C": 0.0}, "--C must be a finite number > 0, found 0.0"),
    ({"bins": 51}, "--bins must be an integer from 2 to 50, found 51"),
    ({"bins": 2.5}, "--bins must be an integer from 2 to 50, found 2.5"),
    ({"seed": True}, "--seed must be an integer >= 0, found True"),
    ({"tasks": "site"}, "--tasks must be None or a list of column names, found 'site'"),
    ({"permutations": 100, "max_permutations": 50}, "--max-permutations (50) must be at least --permutations (100)"),
    ({"bootstrapp": 10}, "AnalysisConfig: unknown setting(s) bootstrapp"),
])
def test_constraints_are_one_line_errors_naming_the_flag(change, message):
    with pytest.raises(WscaInputError) as e:
        AnalysisConfig().replace(**change)
    assert str(e.value) == message


def test_config_round_trips_and_is_frozen_and_hashable():
    c = AnalysisConfig().replace(bootstrap=10, tasks=["a", "b"], C=0.1, ci_method="bca", permute_within="label")
    assert c.encoding.tasks == ("a", "b")                       # lists frozen as tuples
    assert AnalysisConfig.from_dict(c.to_dict()) == c and hash(c) == hash(AnalysisConfig.from_dict(c.to_dict()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.resampling.bootstrap = 3
    assert AnalysisConfig().replace(bootstrap=10) != AnalysisConfig()


def test_flat_keywords_still_work_with_a_deprecation_warning(known_answer):
    z, meta, head = known_answer(n=200, d=8, seed=1)
    cfg = AnalysisConfig().replace(bootstrap=0, permutations=0, pca_min=8)
    new = wsca.analyze(z, meta, "label", head, config=cfg)
    with pytest.warns(DeprecationWarning, match="deprecated"):
        old = wsca.analyze(z, meta, "label", head, bootstrap=0, permutations=0, pca_min=8)
    assert old.settings == new.settings
    np.testing.assert_array_equal(old.tasks["site"].wsc, new.tasks["site"].wsc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # the config form warns about nothing
        wsca.analyze(z, meta, "label", head, config=cfg)
    with pytest.raises(WscaInputError, match="config: expected an AnalysisConfig, found dict"):
        wsca.analyze(z, meta, "label", head, config={"bootstrap": 0})


def test_numpy_and_pandas_values_are_frozen_as_plain_python(known_answer, tmp_path):
    """Settings given as NumPy scalars, arrays or a pandas Index become plain, hashable values, and
    the result writes to JSON (0.8.3 cast them when writing; a config must not fail after the work)."""
    import pandas as pd
    z, meta, head = known_answer(n=200, d=8, seed=2)
    cfg = AnalysisConfig().replace(seed=np.int64(1), categorical=pd.Index(["site"]), alpha=np.float64(0.05),
                                   bootstrap=np.int32(0), permutations=0, pca_min=8)
    assert type(cfg.resampling.seed) is int and cfg.encoding.categorical == ("site",) and hash(cfg)
    res = wsca.analyze(z, meta, "label", head, config=cfg)
    res.to_json(tmp_path / "wsca.json")
    assert AnalysisConfig.from_dict(res.to_dict()["settings"]) == cfg


def test_a_section_and_its_flat_names_replace_together():
    from wsca_jax.probes import ProbeConfig
    c = AnalysisConfig().replace(probe=ProbeConfig(C=2.0), max_iter=5)
    assert (c.probe.C, c.probe.max_iter) == (2.0, 5)
    with pytest.raises(WscaInputError, match="^tol must be a finite number > 0, found -1$"):   # no --tol flag
        ProbeConfig(tol=-1)


def test_moved_top_level_names_still_work_with_a_deprecation_warning():
    from wsca_jax.stats import holm
    with pytest.warns(DeprecationWarning, match="wsca_jax.holm is deprecated: use wsca_jax.stats.holm"):
        assert wsca.holm is holm
    with pytest.raises(AttributeError):
        wsca.no_such_name
