"""experiments/runner.py: the records, resuming and the --report-only main every experiment shares."""

import pathlib
import sys

import numpy as np
import pytest

EXP = pathlib.Path(__file__).parents[1] / "experiments"
sys.path.insert(0, str(EXP))

import runner  # noqa: E402


def test_records_round_trip_in_order(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    runner.append_record(path, {"seed": 0, "x": 0.5})
    runner.append_record(path, {"seed": 1, "x": np.float32(0.25)}, default=float)   # NumPy scalar via default
    assert runner.read_records(path) == [{"seed": 0, "x": 0.5}, {"seed": 1, "x": 0.25}]
    assert (tmp_path / "runs.jsonl").read_text() == '{"seed": 0, "x": 0.5}\n{"seed": 1, "x": 0.25}\n'
    assert list(runner.records_frame(path).seed) == [0, 1]


def test_missing_records_raise_unless_allowed(tmp_path):
    path = str(tmp_path / "none.jsonl")
    with pytest.raises(FileNotFoundError):
        runner.read_records(path)
    assert runner.read_records(path, missing_ok=True) == []
    assert runner.records_frame(path, missing_ok=True).empty
    assert runner.done_keys(path, ("seed",)) == set()


def test_done_keys_resume_and_fill_fields_older_records_lack(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    runner.append_record(path, {"backbone": "cnn", "seed": 0})                       # an older record
    runner.append_record(path, {"dataset": "busbra", "backbone": "cnn", "seed": 1})
    done = runner.done_keys(path, ("dataset", "backbone", "seed"), {"dataset": "waterbirds"})
    assert done == {("waterbirds", "cnn", 0), ("busbra", "cnn", 1)}
    todo = [(d, "cnn", s) for d in ("waterbirds", "busbra") for s in (0, 1)]
    assert [k for k in todo if k not in done] == [("waterbirds", "cnn", 1), ("busbra", "cnn", 0)]
    with pytest.raises(KeyError):                                                     # no default: required
        runner.done_keys(path, ("dataset", "seed"))


def _study(tmp_path, argv, fresh=None):
    calls = []

    def run(args):
        calls.append(args.seeds)
        runner.append_record(str(tmp_path / "runs.jsonl"), {"seed": len(calls)})

    def render(args):
        return f"{len(runner.read_records(str(tmp_path / 'runs.jsonl')))} records\n"

    p = runner.parser("doc", lambda p: p.add_argument("--seeds", default="0,1"))
    runner.run_study(p.parse_args(argv + ["--out", str(tmp_path)]), run, {"study.md": render}, fresh=fresh)
    return calls, (tmp_path / "study.md").read_text()


def test_run_study_report_only_renders_without_computing(tmp_path, capsys):
    runner.append_record(str(tmp_path / "runs.jsonl"), {"seed": 0})
    assert _study(tmp_path, ["--report-only"]) == ([], "1 records\n")
    assert capsys.readouterr().out == f"wrote {tmp_path}/study.md\n"
    assert _study(tmp_path, []) == (["0,1"], "2 records\n")                          # resumes: appends
    assert _study(tmp_path, [], fresh="runs.jsonl") == (["0,1"], "1 records\n")      # starts over


def test_parser_shares_the_common_flags():
    args = runner.parser("doc").parse_args([])
    assert (args.data_dir, args.report_only, args.out) == (None, False, runner.RESULTS)
    assert runner.RESULTS == str(EXP / "results")
    assert not hasattr(runner.parser("doc", data_dir=False).parse_args([]), "data_dir")
