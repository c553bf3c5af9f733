"""The hostile-user battery (issue 10): every malformed input to `wsca analyze`, `train`, `embed`,
`report` and `ifa` gets one line naming the problem, exit code 2, no traceback and nothing new on disk; the
cases that used to give a silently wrong result assert their new behaviour.

One table, ``CASES``: name -> (command, arguments, expected message). ``{d}`` is the folder of
prepared files (see ``prepared``), ``{run}`` a trained toy run, ``{out}`` a fresh output path.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import jax
import numpy as np
import pandas as pd
import pytest

from conftest import make_known_answer
from wsca_jax.cli import main

# -------------------------------------------------------------------------------------------------
# prepared files


def toy_images(n=192, seed=0):
    """16x16 images: a bright square for label 1, a site-coded band; split by row number."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    site = rng.integers(0, 3, n)
    img = rng.integers(0, 60, (n, 16, 16, 1)).astype(np.uint8)
    img[y == 1, 4:12, 4:12] += 120
    img[:, :2] = (site * 70)[:, None, None, None].astype(np.uint8)
    split = np.where(np.arange(n) % 6 == 0, 1, np.where(np.arange(n) % 6 == 1, 2, 0)).astype(np.int8)
    return {"images": img, "label": y, "site": np.array(["a", "b", "c"])[site], "split": split}


I = ["--run", "{d}/run", "--tfds-dir", "{d}/tfds", "--no-figures", "--random-masks", "2"]
TRAIN = ["--primary", "label", "--setting", "multi_task", "--tasks", "site", "--epochs", "2", "--batch-size", "32",
         "--quiet"]


def _flip_zip_payload(src, dst, member="embeddings.npy"):
    """Copy an .npz and flip bytes in the middle of one member's stored data (CRC no longer matches)."""
    shutil.copy(src, dst)
    with zipfile.ZipFile(dst) as z:
        info = z.getinfo(member)
    with open(dst, "r+b") as f:
        f.seek(info.header_offset + 30 + len(info.filename) + len(info.extra) + 200)
        f.write(b"\xff" * 16)


def _zero_npy_header(src, dst, member="embeddings.npy"):
    """Rewrite an .npz with one member's .npy header bytes zeroed (a consistent zip, a broken array)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == member:
                data = data[:10] + b"\x00" * 40 + data[50:]
            zout.writestr(item, data)


def _issue27_files(d, z, meta, head):
    """Inputs that used to give a confident wrong answer (issue 27)."""
    cols = dict(label=meta["label"].to_numpy(), site=meta["site"].to_numpy())
    np.savez(d / "run_a.npz", embeddings=z, head_label=head, **cols)
    shutil.copy(d / "run_a.npz", d / "run_copy.npz")
    np.savez(d / "run_nohead.npz", embeddings=z + 1e-3, **cols)
    meta.assign(site_copy=meta["site"].map({0: "x", 1: "y"})).to_csv(d / "meta_copy.csv", index=False)
    np.savez(d / "emb_heads.npz", embeddings=z, head_label=head, head_site=np.eye(z.shape[1])[[1]], **cols)
    (d / "null_big.txt").write_text("5\n0.2\n")
    n = 12
    maps = np.ones((n, 2, 2, 4), np.float32)
    extra = dict(head_label=np.eye(4, dtype=np.float32)[:2], bias_label=np.zeros(2, np.float32),
                 label=np.arange(n) % 2, source=(np.arange(n) // 2) % 2)
    for name, m in (("maps_ok", maps), ("maps_zero", 0 * maps), ("maps_nan", np.where(np.arange(n)[:, None, None, None] == 3,
                                                                                    np.nan, maps))):
        np.savez(d / f"{name}.npz", embeddings=np.nan_to_num(m).mean((1, 2)), feature_maps=m.astype(np.float32), **extra)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    z, meta, head = make_known_answer(n=400, d=16, used=True, seed=5)
    meta["age"] = np.random.default_rng(0).normal(50, 10, len(meta))
    meta["case"] = np.arange(len(meta)) // 2
    np.save(d / "emb.npy", z)
    meta.to_csv(d / "meta.csv", index=False)
    np.save(d / "head.npy", head)
    meta.iloc[:-1].to_csv(d / "short.csv", index=False)
    zn = z.copy(); zn[7, 3] = np.nan; np.save(d / "nan.npy", zn)         # noqa: E702
    zh = z.copy(); zh[3, 2] = 1e20; np.save(d / "huge.npy", zh)           # noqa: E702
    np.save(d / "scaled.npy", z * 1e200)
    np.save(d / "complex.npy", z + 1j * z)
    np.save(d / "constant.npy", np.ones_like(z))
    np.save(d / "text.npy", z.astype(str))
    np.save(d / "flat.npy", z[:, 0])
    np.save(d / "badhead.npy", np.ones(15))
    np.save(d / "cube_head.npy", np.ones((2, 2, 16)))
    (d / "meta.txt").write_text("x")
    (d / "null.txt").write_text("0.1\n0.2\n0.3\n")
    (d / "afile").write_text("x")
    (d / "folder.npy").mkdir()
    np.savez(d / "obj.npz", embeddings=z, site=np.array(["a", None] * 200, dtype=object))
    np.savez(d / "noemb.npz", x=z)
    np.savez(d / "emb.npz", embeddings=z, label=meta["label"].to_numpy(), site=meta["site"].to_numpy())
    _flip_zip_payload(d / "emb.npz", d / "flipped.npz")
    _issue27_files(d, z, meta, head)
    _zero_npy_header(d / "emb.npz", d / "zeroed.npz")
    with open(d / "emb.npz", "rb") as f:
        (d / "truncated.npz").write_bytes(f.read()[:3000])
    m = meta.copy()
    m.insert(2, "site_dup", m["site"])
    m.to_csv(d / "dup.csv", index=False)
    text = (d / "dup.csv").read_text().replace("site_dup", "site", 1)
    (d / "dup.csv").write_text(text)
    m = meta.copy()
    m.loc[::2, "age"] = np.inf
    m.to_csv(d / "inf.csv", index=False)
    m = meta.copy()
    m.loc[5, "case"] = np.nan
    m.to_csv(d / "nogroup.csv", index=False)
    m = meta.copy()
    m["label"] = 1
    m.to_csv(d / "constlabel.csv", index=False)
    meta.iloc[:0].to_csv(d / "empty.csv", index=False)
    m = meta[["label", "site"]].copy()
    m["tags"] = [[1, 2]] * len(m)
    m.to_parquet(d / "nested.parquet")
    # a wsca analyze folder, then damaged copies
    assert main(["analyze", "--embeddings", str(d / "emb.npy"), "--metadata", str(d / "meta.csv"), "--primary",
                 "label", "--bootstrap", "20", "--permutations", "20", "--pca-min", "16", "--no-figures", "--quiet",
                 "--out", str(d / "res")]) == 0
    shutil.copytree(d / "res", d / "res_trunc")
    p = d / "res_trunc" / "wsca_distributions.npz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    shutil.copytree(d / "res", d / "res_badjson")
    (d / "res_badjson" / "wsca.json").write_text("{\"tasks\": ")
    (d / "nojson").mkdir()
    # training data, good and bad
    t = toy_images()
    np.savez(d / "toy.npz", **t)
    np.savez(d / "toy_obj.npz", **{**t, "site": t["site"].astype(object)})
    np.savez(d / "toy_empty.npz", **{k: v[:0] for k, v in t.items()})
    np.savez(d / "toy_float.npz", **{**t, "images": t["images"].astype(np.float32)})
    # one trained run (2 epochs) and damaged copies of it
    tf = str(d / "tfds")
    assert main(["train", "--dataset", str(d / "toy.npz"), *TRAIN, "--tfds-dir", tf, "--out", str(d / "run")]) == 0
    for name in ("run_badjson", "run_nobest", "run_noresume", "run_nomanifest", "run_truncdata", "run_deldata",
                 "run_alldamaged"):
        shutil.copytree(d / "run", d / name)
    for name, damage in (("run_truncdata", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])),
                         ("run_deldata", lambda p: p.unlink())):
        for which in ("best", "latest"):
            for step in (d / name / "ckpt" / which).iterdir():
                damage(max(step.rglob("d/*"), key=lambda p: p.stat().st_size))
    for p in (d / "run_alldamaged" / "ckpt" / "latest").rglob("manifest.ocdbt"):
        p.unlink()
    (d / "run_badjson" / "run.json").write_text("{\"config\": ")
    shutil.rmtree(d / "run_nobest" / "ckpt" / "best")
    shutil.rmtree(d / "run_noresume" / "ckpt")
    for p in (d / "run_nomanifest" / "ckpt").rglob("manifest.ocdbt"):
        p.unlink()
    (d / "notrun").mkdir()
    (d / "notrun" / "notes.txt").write_text("mine")
    (d / "badtype").mkdir()
    (d / "badtype" / "run.json").write_text(json.dumps({**json.loads((d / "run" / "run.json").read_text()),
                                                        "config": []}))
    shutil.copytree(d / "res", d / "res_dirhtml")
    (d / "res_dirhtml" / "report.html").unlink()
    (d / "res_dirhtml" / "report.html").mkdir()
    np.savez(d / "toy2.npz", **toy_images(seed=1))
    (d / "emptyrun").mkdir()
    (d / "emptyrun" / "run.json").write_text((d / "run" / "run.json").read_text())
    return d


A = ["--embeddings", "{d}/emb.npy", "--metadata", "{d}/meta.csv", "--primary", "label", "--bootstrap", "0",
     "--permutations", "0", "--quiet"]


def a(*extra, base=A):
    """analyze arguments: the base with flags replaced by ``extra``'s (flag, value) pairs or appended."""
    args = list(base)
    extra = list(extra)
    while extra:
        flag = extra.pop(0)
        takes = bool(extra) and not extra[0].startswith("--")
        value = extra.pop(0) if takes else None
        if flag in args and value is not None:
            args[args.index(flag) + 1] = value
        elif flag in args:
            pass
        else:
            args += [flag] + ([value] if value is not None else [])
    return args


T = ["--dataset", "{d}/toy.npz", *TRAIN, "--tfds-dir", "{d}/tfds"]

CASES = {
    # ---- analyze: files
    "analyze missing file": ("analyze", a("--embeddings", "{d}/none.npy"), "file not found"),
    "analyze memory zero": ("analyze", a("--memory-gb", "0"), "--memory-gb must be None or a finite number > 0, found 0.0"),
    "analyze join timeout zero": ("analyze", a("--distributed", "--coordinator", "127.0.0.1:1", "--num-processes", "2",
                                               "--process-id", "1", "--join-timeout", "0"),
                                  "--join-timeout must be a number of seconds > 0, found 0.0"),
    "analyze process id out of range": ("analyze", a("--distributed", "--coordinator", "127.0.0.1:1",
                                                     "--num-processes", "2", "--process-id", "5"),
                                        "--process-id must be 0 .. 1 (--num-processes 2), found 5"),
    "analyze max iter zero": ("analyze", a("--max-iter", "0"), "--max-iter must be an integer >= 1, found 0"),
    "analyze one fold": ("analyze", a("--cv-folds", "1"), "--cv-folds must be an integer >= 2, found 1"),
    # ---- issue 27: confident wrong answers, now refused before any work
    "analyze runs given twice": ("analyze", ["--runs", "{d}/run_a.npz", "{d}/run_a.npz", "--primary", "label", "--quiet"],
                                 "given twice"),
    "analyze runs same content": ("analyze", ["--runs", "{d}/run_a.npz", "{d}/run_copy.npz", "--primary", "label",
                                              "--quiet"], "the same embeddings as run_a (a run given twice)"),
    "analyze runs head and probe": ("analyze", ["--runs", "{d}/run_a.npz", "{d}/run_nohead.npz", "--primary", "label",
                                                "--quiet"], "run_a have the model's primary head and run_nohead do not"),
    "analyze permute within a copy of the task": ("analyze", a("--metadata", "{d}/meta_copy.csv", "--tasks", "site",
                                                              "--permute-within", "site_copy"),
                                                  "--permute-within 'site_copy': it determines task 'site'"),
    "analyze seed null above one": ("analyze", ["--embeddings", "{d}/emb_heads.npz", "--primary", "label", "--task-heads",
                                                "site", "--head-null", "site={d}/null_big.txt", "--quiet"],
                                    "head_null 'site': value 5.0 is not a max |WSC|"),
    "analyze cv folds above rows": ("analyze", a("--cv-folds", "1000"), "--cv-folds 1000: more folds than rows (400)"),
    "analyze memory inf": ("analyze", a("--memory-gb", "inf"), "--memory-gb must be None or a finite number > 0, found inf"),
    "analyze distributed options alone": ("analyze", a("--process-id", "1"), "go with --distributed"),
    "analyze embeddings folder": ("analyze", a("--embeddings", "{d}/folder.npy"), "not a file"),
    "analyze embeddings extension": ("analyze", a("--embeddings", "{d}/meta.txt"), "expected a .npy or .npz"),
    "analyze npz without embeddings": ("analyze", a("--embeddings", "{d}/noemb.npz"), "no array named 'embeddings'"),
    "analyze object npz": ("analyze", a("--embeddings", "{d}/obj.npz"), "cannot be read without pickle"),
    "analyze npz flipped payload": ("analyze", a("--embeddings", "{d}/flipped.npz"), "is damaged"),
    "analyze npz zeroed header": ("analyze", a("--embeddings", "{d}/zeroed.npz"), "is damaged"),
    "analyze npz truncated": ("analyze", a("--embeddings", "{d}/truncated.npz"), "cannot be read as .npz"),
    "analyze row mismatch": ("analyze", a("--metadata", "{d}/short.csv"), "metadata has 399 rows, embeddings have 400"),
    "analyze empty metadata": ("analyze", a("--metadata", "{d}/empty.csv"), "metadata has 0 rows"),
    "analyze metadata type": ("analyze", a("--metadata", "{d}/meta.txt"), "expected a .csv or .parquet file"),
    "analyze metadata missing": ("analyze", a("--metadata", "{d}/none.csv"), "file not found"),
    "analyze duplicate csv columns": ("analyze", a("--metadata", "{d}/dup.csv"), "column 'site' appears 2 times"),
    "analyze parquet list column": ("analyze", a("--metadata", "{d}/nested.parquet"), "column 'tags' holds"),
    "analyze inf in metadata": ("analyze", a("--metadata", "{d}/inf.csv"), "metadata column 'age': 200 infinite"),
    # ---- analyze: embeddings' values
    "analyze nan rows": ("analyze", a("--embeddings", "{d}/nan.npy"), "row 7 contains NaN or inf"),
    "analyze huge values": ("analyze", a("--embeddings", "{d}/huge.npy"), "|value| 1e+20 at row 3, column 2"),
    "analyze scaled 1e200": ("analyze", a("--embeddings", "{d}/scaled.npy"), "expected at most 1e+15"),
    "analyze complex": ("analyze", a("--embeddings", "{d}/complex.npy"), "complex numbers"),
    "analyze constant": ("analyze", a("--embeddings", "{d}/constant.npy"), "columns is constant"),
    "analyze text embeddings": ("analyze", a("--embeddings", "{d}/text.npy"), "expected numbers"),
    "analyze 1-D embeddings": ("analyze", a("--embeddings", "{d}/flat.npy"), "expected a 2-D (N, D) array"),
    # ---- analyze: columns and heads
    "analyze unknown primary": ("analyze", a("--primary", "nope"), "column 'nope' not in metadata"),
    "analyze constant primary": ("analyze", a("--metadata", "{d}/constlabel.csv"), "--primary column 'label' cannot be a task"),
    "analyze unknown task": ("analyze", a("--tasks", "site,zzz"), "column 'zzz' not in metadata"),
    "analyze head width": ("analyze", a("--primary-head", "{d}/badhead.npy"), "width 15 does not match"),
    "analyze head 3-D": ("analyze", a("--primary-head", "{d}/cube_head.npy"), "primary head"),
    "analyze head not npy": ("analyze", a("--primary-head", "{d}/meta.txt"), "expected a .npy file"),
    "analyze task heads missing": ("analyze", a("--task-heads", "site"), "has no head_site array"),
    "analyze group is primary": ("analyze", a("--group-column", "label"), "is also the --primary column"),
    "analyze group missing rows": ("analyze", a("--metadata", "{d}/nogroup.csv", "--group-column", "case"),
                                   "row 5 is missing"),
    "analyze permute within unknown": ("analyze", a("--permute-within", "nope"), "--permute-within: no column 'nope' (columns: "),
    # ---- analyze: settings
    "analyze bins 1": ("analyze", a("--bins", "1"), "--bins must be an integer from 2 to 50"),
    "analyze bins 100000": ("analyze", a("--bins", "100000"), "--bins must be an integer from 2 to 50"),
    "analyze negative seed": ("analyze", a("--seed", "-1"), "--seed must be an integer >= 0"),
    "analyze alpha zero": ("analyze", a("--alpha", "0"), "--alpha must be in (0, 1), found 0.0"),
    "analyze alpha nan": ("analyze", a("--alpha", "nan"), "--alpha must be in (0, 1), found nan"),
    "analyze C inf": ("analyze", a("--C", "inf"), "must be a finite number > 0, found inf"),
    "analyze C zero": ("analyze", a("--C", "0"), "must be a finite number > 0, found 0.0"),
    "analyze negative bootstrap": ("analyze", a("--bootstrap", "-1"), "--bootstrap must be an integer >= 0, found -1"),
    "analyze max permutations": ("analyze", a("--permutations", "50", "--max-permutations", "10"),
                                 "--max-permutations (10) must be at least --permutations (50)"),
    "analyze ci method": ("analyze", a("--ci-method", "magic"), "invalid choice: 'magic'"),
    "analyze head null spec": ("analyze", a("--head-null", "site"), "--head-null 'site': expected TASK=FILE"),
    "analyze head null file": ("analyze", a("--head-null", "site={d}/none.txt"), "--head-null site: file not found"),
    "analyze head null text": ("analyze", a("--head-null", "site={d}/meta.txt"), "--head-null site: cannot read"),
    "analyze head null without head": ("analyze", a("--head-null", "site={d}/null.txt"),
                                       "head_null 'site': no jointly trained head"),
    "analyze counterfactual spec": ("analyze", a("--counterfactual", "site"), "--counterfactual 'site': expected TASK=FILE"),
    "analyze counterfactual file": ("analyze", a("--counterfactual", "site={d}/none.npz"),
                                    "--counterfactual site: file not found"),
    "analyze counterfactual not npy": ("analyze", a("--counterfactual", "site={d}/meta.txt"),
                                       "meta.txt: expected a .npy or .npz file, found .txt"),
    "analyze counterfactual rows": ("analyze", a("--counterfactual", "site={d}/badhead.npy"),
                                    "expected the same rows, in the same order"),
    "analyze counterfactual task": ("analyze", a("--counterfactual", "zzz={d}/emb.npz"), "counterfactual 'zzz': not a metadata task"),
    "analyze control alone": ("analyze", a("--counterfactual-control", "site={d}/emb.npz"),
                              "--counterfactual-control site: no --counterfactual for that task"),
    "analyze control rows": ("analyze", a("--counterfactual", "site={d}/emb.npz", "--counterfactual-control",
                                          "site={d}/badhead.npy"), "--counterfactual-control site: "),
    "analyze counterfactual twice": ("analyze", a() + ["--counterfactual", "site={d}/emb.npz", "--counterfactual",
                                                       "site={d}/emb.npz"], "--counterfactual site: given twice"),
    "analyze use margin zero": ("analyze", a("--use-margin", "0"), "--use-margin must be a finite number > 0, found 0.0"),
    "analyze use statistic": ("analyze", a("--use-statistic", "wsc"), "invalid choice: 'wsc'"),
    "analyze runs single": ("analyze", ["--runs", "{d}/emb.npz", "--primary", "label"], "expected at least 2 runs"),
    "analyze runs and embeddings": ("analyze", A + ["--runs", "{d}/emb.npz", "{d}/emb.npz"], "not both"),
    # ---- analyze: output paths (checked before any work)
    "analyze out empty": ("analyze", a(), "--out: empty path", ""),
    "analyze out is a file": ("analyze", a(), "exists and is not a folder", "{d}/afile"),
    "analyze out under a file": ("analyze", a(), "is a file, not a folder", "{d}/afile/res"),
    "analyze out under proc": ("analyze", a(), "cannot write in", "/proc/wsca_out"),
    "analyze out name too long": ("analyze", a(), "expected at most 255", "{d}/" + "x" * 300),
    # ---- report
    "report missing folder": ("report", ["--run", "{d}/none"], "no such folder", None),
    "report no wsca.json": ("report", ["--run", "{d}/nojson"], "no wsca.json", None),
    "report broken wsca.json": ("report", ["--run", "{d}/res_badjson"], "not a readable wsca.json", None),
    "report truncated distributions": ("report", ["--run", "{d}/res_trunc"], "wsca_distributions.npz: damaged", None),
    "report out is a folder": ("report", ["--run", "{d}/res"], "is a folder; expected a file name", "{d}/nojson"),
    "report default out is a folder": ("report", ["--run", "{d}/res_dirhtml"], "is a folder; expected a file name", None),
    "report out under proc": ("report", ["--run", "{d}/res"], "cannot write in", "/proc/wsca.html"),
    # ---- train
    "train learning rate nan": ("train", T + ["--learning-rate", "nan"], "--learning-rate must be a finite number > 0"),
    "train learning rate negative": ("train", T + ["--learning-rate", "-1"], "--learning-rate must be a finite number > 0"),
    "train epochs 0": ("train", T + ["--epochs", "0"], "--epochs must be an integer >= 1, found 0"),
    "train batch size 0": ("train", T + ["--batch-size", "0"], "--batch-size must be an integer >= 1, found 0"),
    "train negative seed": ("train", T + ["--seed", "-3"], "--seed must be an integer >= 0"),
    "train negative split seed": ("train", T + ["--split-seed", "-1"], "--split-seed must be an integer >= 0"),
    "train out empty": ("train", T, "--out: empty path", ""),
    "train out is a file": ("train", T, "exists and is not a folder", "{d}/afile"),
    "train out under proc": ("train", T, "cannot write in", "/proc/wsca_run"),
    "train into an existing run": ("train", T + ["--seed", "1"], "already holds files", "{d}/run"),
    "train overwrite a folder that is not a run": ("train", T + ["--overwrite"], "refusing to clear", "{d}/notrun"),
    "train resume and overwrite": ("train", T + ["--resume", "--overwrite"], "give one", "{d}/run"),
    "train resume without run.json": ("train", T + ["--resume"], "no run.json", "{d}/notrun"),
    "train resume broken run.json": ("train", T + ["--resume"], "cannot be read as JSON", "{d}/run_badjson"),
    "train resume without checkpoint": ("train", T + ["--resume"], "no checkpoint in", "{d}/emptyrun"),
    "train resume other data": ("train", T + ["--resume", "--dataset", "{d}/toy2.npz"],
                                "--resume: the data differ from those the run was trained on", "{d}/run"),
    "train overwrite a broken run": ("train", T + ["--overwrite"], "refusing to clear a folder that is not a wsca run",
                                     "{d}/run_badjson"),
    "train resume other settings": ("train", T + ["--resume", "--epochs", "3", "--learning-rate", "0.01"],
                                    "other settings (epochs 2 != 3, learning_rate 0.002 != 0.01)", "{d}/run"),
    "train dataset missing": ("train", T + ["--dataset", "{d}/none.npz"], "no such file or folder"),
    "train dataset object column": ("train", T + ["--dataset", "{d}/toy_obj.npz"], "array 'site' holds Python objects"),
    "train dataset zero images": ("train", T + ["--dataset", "{d}/toy_empty.npz"], "holds 0 images"),
    "train dataset float images": ("train", T + ["--dataset", "{d}/toy_float.npz"], "images must be uint8"),
    "train unknown primary": ("train", T + ["--primary", "nope"], "task column: no column 'nope' in the dataset"),
    # ---- embed
    "embed run missing": ("embed", ["--run", "{d}/none"], "no run.json", "{d}/e.npz"),
    "embed run.json of the wrong types": ("embed", ["--run", "{d}/badtype"], "of the wrong type", "{d}/e.npz"),
    "embed broken run.json": ("embed", ["--run", "{d}/run_badjson"], "cannot be read as JSON", "{d}/e.npz"),
    "embed out is a folder": ("embed", ["--run", "{d}/run"], "is a folder; expected a file name", "{d}/nojson"),
    "embed out under proc": ("embed", ["--run", "{d}/run"], "cannot write in", "/proc/e.npz"),
    "embed best missing": ("embed", ["--run", "{d}/run_nobest", "--tfds-dir", "{d}/tfds"],
                           "no best checkpoint", "{d}/e.npz"),
    "embed no checkpoint": ("embed", ["--run", "{d}/run_noresume", "--checkpoint", "latest", "--tfds-dir", "{d}/tfds"],
                            "no latest checkpoint", "{d}/e.npz"),
    "embed checkpoint data truncated": ("embed", ["--run", "{d}/run_truncdata", "--tfds-dir", "{d}/tfds"],
                                        "run_truncdata: best epoch", "{d}/e.npz"),
    "embed checkpoint data deleted": ("embed", ["--run", "{d}/run_deldata", "--tfds-dir", "{d}/tfds"],
                                      "run_deldata: best epoch", "{d}/e.npz"),
    "train resume every checkpoint damaged": ("train", T + ["--resume"], "latest verifies (newest: ",
                                              "{d}/run_alldamaged"),
    "embed checkpoint without manifest": ("embed", ["--run", "{d}/run_nomanifest", "--tfds-dir", "{d}/tfds"],
                                          "checkpoint cannot be read", "{d}/e.npz"),
    # ---- ifa
    "ifa run missing": ("ifa", ["--run", "{d}/none"], "no run.json"),
    "ifa broken run.json": ("ifa", ["--run", "{d}/run_badjson"], "cannot be read as JSON"),
    "ifa out is a file": ("ifa", ["--run", "{d}/run"], "exists and is not a folder", "{d}/afile"),
    "ifa fractions zero": ("ifa", I + ["--fractions", "0,0.5"], "--fractions must be comma-separated numbers in (0, 1], found 0.0,0.5"),
    "ifa fractions text": ("ifa", I + ["--fractions", "half"], "--fractions must be comma-separated numbers in (0, 1], found 'half'"),
    "ifa random masks zero": ("ifa", I + ["--random-masks", "0"], "--random-masks must be an integer from 1 to 10000, found 0"),
    "ifa stored maps all zero": ("ifa", ["--embeddings", "{d}/maps_zero.npz", "--no-figures"], "feature_maps are all zero"),
    "ifa stored maps nan": ("ifa", ["--embeddings", "{d}/maps_nan.npz", "--no-figures"],
                            "feature_maps of image 3 contain NaN or inf (1 such images)"),
    "ifa layer blank": ("ifa", ["--embeddings", "{d}/maps_ok.npz", "--layer", ""], "--layer must be 'last' or a submodule"),
    "ifa random masks huge": ("ifa", ["--embeddings", "{d}/maps_ok.npz", "--random-masks", "2000000"],
                              "--random-masks must be an integer from 1 to 10000, found 2000000"),
    "ifa seed negative": ("ifa", ["--embeddings", "{d}/maps_ok.npz", "--seed", "-1"], "--seed must be an integer >= 0"),
    "ifa target out of range": ("ifa", I + ["--target", "7"], "the primary head has classes 0..1"),
    "ifa target text": ("ifa", I + ["--target", "most"], "--target must be predicted, true or a class index, found 'most'"),
    "ifa region malformed": ("ifa", I + ["--region", "top"], "expected y0:y1,x0:x1 in image pixels"),
    "ifa region outside the image": ("ifa", I + ["--region", "0:40,0:4"], "--region"),
    "ifa unknown task": ("ifa", I + ["--tasks", "scanner"], "--tasks: no column 'scanner' in the dataset"),
    "ifa unknown layer": ("ifa", I + ["--layer", "conv99"], "--layer 'conv99': no submodule of that name"),
    "ifa best checkpoint missing": ("ifa", ["--run", "{d}/run_nobest", "--tfds-dir", "{d}/tfds"],
                                    "no best checkpoint"),
}


def _snapshot(folder):
    """Every path under ``folder``: files with their size and modification time, folders by name."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for n in dirs:
            out[os.path.relpath(os.path.join(root, n), folder)] = "dir"
        for n in files:
            st = os.lstat(os.path.join(root, n))
            out[os.path.relpath(os.path.join(root, n), folder)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line_exit_2_nothing_written(prepared, capsys, case):
    d = prepared
    command, args, message, *out = CASES[case]
    out = (out[0] if out else "{d}/out_" + case.replace(" ", "_"))
    argv = [command, *[x.format(d=d) for x in args]]
    if out is not None:
        out = out.format(d=d)
        argv += ["--out", out]
    before = _snapshot(d)
    capsys.readouterr()
    code = main(argv)
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    after = _snapshot(d)
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    assert not new, new
    assert not changed, changed


def test_battery_size():
    assert len(CASES) >= 60
    assert {c[0] for c in CASES.values()} == {"analyze", "train", "embed", "report", "ifa"}


def test_subprocess_error_has_no_traceback(prepared):
    """The real entry point (``wsca`` = ``cli.entry``): a damaged checkpoint's failed reads must not
    print library tracebacks around the one line (in-process cases are the table above)."""
    # a damaged checkpoint: library threads must not print tracebacks around the one line
    r = subprocess.run([sys.executable, "-m", "wsca_jax.cli", "embed", "--run", str(prepared / "run_nomanifest"),
                        "--tfds-dir", str(prepared / "tfds"), "--out", str(prepared / "o.npz")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# -------------------------------------------------------------------------------------------------
# silent wrong results, now caught


def _params(run, which="latest"):
    from wsca_jax.training.train import load_run
    return jax.tree_util.tree_leaves(load_run(str(run), which)[1])


def test_overwrite_replaces_the_run_and_its_checkpoints(prepared, tmp_path, capsys):
    d = prepared
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    old = _params(run)
    assert main(["train", *[x.format(d=d) for x in T], "--seed", "1", "--overwrite", "--out", str(run)]) == 0
    rec = json.loads((run / "run.json").read_text())
    assert rec["config"]["seed"] == 1
    new = _params(run)
    assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(old, new))


def test_damaged_checkpoint_is_detected_and_resume_falls_back(prepared, tmp_path, capsys):
    """Flip bytes in a data file of the newest checkpoint: embed names the damaged checkpoint; a resume
    warns, continues from the previous epoch and ends with the uninterrupted run's parameters."""
    d = prepared
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    latest = run / "ckpt" / "latest"
    assert sorted(os.listdir(latest)) == ["0", "1"]                  # two epochs kept
    files = sorted((latest / "1").rglob("d/*"), key=lambda p: -p.stat().st_size)
    with open(files[0], "r+b") as f:
        f.seek(files[0].stat().st_size // 2)
        f.write(b"\x00\x01\x02\x03" * 8)
    capsys.readouterr()
    code = main(["embed", "--run", str(run), "--checkpoint", "latest", "--tfds-dir", str(d / "tfds"),
                 "--out", str(tmp_path / "e.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "latest epoch 1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e.npz").exists()
    # readable but wrong parameters (epoch 0's files under epoch 1's name): only the digest can tell
    swapped = tmp_path / "swapped"
    shutil.copytree(d / "run", swapped)
    shutil.rmtree(swapped / "ckpt" / "latest" / "1")
    shutil.copytree(swapped / "ckpt" / "latest" / "0", swapped / "ckpt" / "latest" / "1")
    code = main(["embed", "--run", str(swapped), "--checkpoint", "latest", "--tfds-dir", str(d / "tfds"),
                 "--out", str(tmp_path / "e.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "latest epoch 1: the checkpoint's parameters do not match the digest" in err
    # resume: epoch 1 is damaged -> warning, back to epoch 0, train epoch 1 again
    rec = json.loads((run / "run.json").read_text())
    assert main(["train", *[x.format(d=d) for x in T], "--resume", "--out", str(run)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "falling back to the previous checkpoint" in err
    assert os.listdir(run / "ckpt_damaged") == ["latest-1"]
    for x, y in zip(_params(d / "run"), _params(run)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    rec2 = json.loads((run / "run.json").read_text())
    assert rec2["digests"] == rec["digests"]


def test_best_epoch_in_run_json_is_the_best_checkpoint(prepared):
    rec = json.loads((prepared / "run" / "run.json").read_text())
    assert os.listdir(prepared / "run" / "ckpt" / "best") == [str(rec["best"]["epoch"])]
    aurocs = [h["val"]["label"]["auroc"] for h in rec["history"]]
    assert rec["best"]["epoch"] == int(np.argmax(aurocs))             # the first epoch with the best AUROC


def test_long_and_colliding_task_names_get_distinct_files(prepared, tmp_path, capsys):
    d = prepared
    meta = pd.read_csv(d / "meta.csv")
    meta["x" * 5000] = meta["site"]
    meta["a/b"] = meta["site"]
    meta["a:b"] = meta["site"].iloc[::-1].to_numpy()
    meta.to_csv(tmp_path / "m.csv", index=False)
    assert main(["analyze", "--embeddings", str(d / "emb.npy"), "--metadata", str(tmp_path / "m.csv"), "--primary",
                 "label", "--tasks", f"{'x' * 5000},a/b,a:b", "--bootstrap", "0", "--permutations", "0",
                 "--quiet", "--out", str(tmp_path / "r")]) == 0
    heat = [p for p in os.listdir(tmp_path / "r") if p.startswith("wsca_") and p.endswith(".png")]
    assert len(heat) == 3 and max(len(p) for p in heat) < 100


def test_orphan_temporary_folder_of_a_killed_run_is_removed(prepared, tmp_path):
    orphan = tmp_path / ".wsca-tmp-r-999999-abcd1234"                 # no process 999999
    orphan.mkdir()
    (orphan / "wsca.json").write_text("{}")
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    other = tmp_path / ".wsca-tmp-r-2024-999999-abcd1234"            # a run into --out r-2024: not ours
    other.mkdir()
    os.utime(other, (time.time() - 3600, time.time() - 3600))
    assert main(["analyze", *[x.format(d=prepared) for x in A], "--no-figures", "--out", str(tmp_path / "r")]) == 0
    assert not orphan.exists() and other.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".wsca-tmp")] == [other.name]


def test_defaults_give_intervals_and_p_values_and_quiet_keeps_results(tmp_path, capsys):
    z, meta, _ = make_known_answer(n=120, d=6, used=True, seed=2)
    np.save(tmp_path / "z.npy", z)
    meta.to_csv(tmp_path / "m.csv", index=False)
    capsys.readouterr()
    assert main(["analyze", "--embeddings", str(tmp_path / "z.npy"), "--metadata", str(tmp_path / "m.csv"), "--primary",
                 "label", "--tasks", "site", "--pca-min", "6", "--no-figures", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0
    out, err = capsys.readouterr()
    s = json.loads((tmp_path / "r" / "wsca.json").read_text())
    assert s["settings"]["resampling"]["bootstrap"] == 200 and s["resolved"]["permutations"] == 200
    assert s["tasks"]["site"]["summary"]["ci"] is not None and s["tasks"]["site"]["summary"]["p_value"] is not None
    assert "site" in out and "wrote" in out and err == ""            # results print; no progress with --quiet


def test_progress_to_a_file_is_one_line_per_stage(prepared, tmp_path, capsys):
    """stderr captured (a file, not a terminal): one line when the stage ends, no bar refreshes."""
    capsys.readouterr()
    assert main(["analyze", "--embeddings", str(prepared / "emb.npy"), "--metadata", str(prepared / "meta.csv"),
                 "--primary", "label", "--bootstrap", "30", "--permutations", "30", "--no-figures",
                 "--out", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "\r" not in lines[0] and lines[0].startswith("probe fits (replicates):"), lines


def _same_run(run, ref):
    """Parameters of latest and best, the best epoch, ckpt/best and the digests equal the reference's."""
    for which in ("latest", "best"):
        for x, y in zip(_params(ref, which), _params(run, which)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    rec, want = (json.loads((r / "run.json").read_text()) for r in (run, ref))
    assert [h["loss"] for h in rec["history"]] == [h["loss"] for h in want["history"]]
    assert rec["best"] == want["best"] and rec["digests"] == want["digests"]
    assert os.listdir(run / "ckpt" / "best") == [str(rec["best"]["epoch"])]


def test_sigkill_after_a_checkpoint_then_resume_equals_uninterrupted(prepared, tmp_path):
    """kill -9 right after epoch 0's latest checkpoint is committed, before its best one: the resume
    restores epoch 0 as the best too and ends exactly where the uninterrupted run ends."""
    d = prepared
    run = tmp_path / "killed"
    env = {**os.environ, "WSCA_FAULT": "latest:0"}
    r = subprocess.run([sys.executable, "-m", "wsca_jax.cli", "train", *[x.format(d=d) for x in T], "--out", str(run)],
                       env=env, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert os.listdir(run / "ckpt" / "latest") == ["0"] and not os.listdir(run / "ckpt" / "best")
    assert main(["train", *[x.format(d=d) for x in T], "--resume", "--out", str(run)]) == 0
    _same_run(run, d / "run")


@pytest.mark.parametrize("point", ["run_json:1"])
def test_crash_at_each_save_point_then_resume_equals_uninterrupted(prepared, tmp_path, capsys, point, monkeypatch):
    from wsca_jax.training.train import InjectedFault
    d = prepared
    run = tmp_path / "crashed"
    monkeypatch.setenv("WSCA_FAULT", point + ":raise")
    with pytest.raises(InjectedFault):
        main(["train", *[x.format(d=d) for x in T], "--out", str(run)])
    monkeypatch.delenv("WSCA_FAULT")
    if point == "run_json:1":        # run.json already names epoch 1; its checkpoint was never written
        capsys.readouterr()
        code = main(["embed", "--run", str(run), "--checkpoint", "latest", "--tfds-dir", str(d / "tfds"),
                     "--out", str(tmp_path / "e.npz")])
        err = capsys.readouterr().err
        assert code == 2 and "run.json names latest epoch 1 but" in err and "interrupted run" in err
    assert main(["train", *[x.format(d=d) for x in T], "--resume", "--out", str(run)]) == 0
    _same_run(run, d / "run")


@pytest.fixture(scope="module")
def ifa_run_out(prepared, tmp_path_factory):
    """`wsca ifa --run` on the toy run's test split (the site band, the top two rows, as the region)."""
    d, out = prepared, tmp_path_factory.mktemp("ifa") / "ifa"
    assert main(["ifa", "--run", str(d / "run"), "--tfds-dir", str(d / "tfds"), "--region", "0:2,0:16",
                 "--random-masks", "3", "--out", str(out)]) == 0
    return out


def test_ifa_cli_writes_the_documented_record_and_a_report_that_renders(ifa_run_out, tmp_path, chromium):
    """`wsca ifa` on the toy run: the toy's site band (the top two rows) as the region; ifa.json has the
    documented keys, CAM reproduces the logits (r = 1), outlier rows index the split's images, and
    report.html renders in headless Chromium with every figure."""
    from test_report_browser import check_renders
    out = ifa_run_out
    rec = json.loads((out / "ifa.json").read_text())
    assert rec["method"] == "cam" and rec["layer"] == "last" and rec["n"] == 32          # the toy's test rows
    for r in rec["consistency"]["unscaled"]["pearson_r"].values():
        assert r is None or r > 0.999
    assert rec["scale"]["low"] < rec["scale"]["high"]
    assert {"mode", "fraction", "auroc", "accuracy", "cam_similarity"} <= set(rec["decomposition"][0])
    assert set(rec["smallest_sufficient_fraction"]) == {"importance", "difference", "random"}
    site = rec["confounders"]["site"]
    assert {"channels", "decision_share", "p_value"} <= set(site) and 0 < site["p_value"] <= 1
    assert set(rec["localization"]) <= set(rec["classes"])
    assert all(0 <= v["mass_in_region"] <= 1 for v in rec["localization"].values())
    with np.load(out / "ifa_importance.npz") as z:
        assert z["importance"].shape == (rec["n"], rec["channels"]) and z["cams"].shape == z["cams_common"].shape
        assert len(z["rows"]) == rec["n"] == rec["n_split"]
        for o in rec["outliers"]:                       # rows of the analysed images, with their target class
            assert rec["classes"][int(z["target"][o["row"]])] == o["class"]
    figures = sorted(p.name for p in out.glob("*.png"))
    assert figures == ["ifa_cams.png", "ifa_decomposition.png", "ifa_importance.png", "ifa_outliers.png"]
    check_renders(chromium, out / "report.html", tmp_path, min_figures=4)


def test_mid_cli_embeds_the_splits_of_a_run(prepared, tmp_path, capsys):
    """`wsca mid --run`: the run's train/val/test splits embedded in one go (logits_ from the model), every method scored."""
    d, out = prepared, tmp_path / "mid"
    assert main(["mid", "--run", str(d / "run"), "--tfds-dir", str(d / "tfds"), "--primary", "label", "--groups", "label,site",
                 "--k", "2:2", "--restarts", "2", "--refits", "2", "--no-figures", "--out", str(out)]) == 0
    rec = json.loads((out / "mid.json").read_text())
    assert set(rec["methods"]) == {"erm", "class_balanced", "jtt", "mid", "random_band", "mid_oracle", "dfr"}
    assert len(rec["methods"]["erm"]["per_group"]) == 6 and rec["band"]["n"] >= 4
    assert sorted(os.listdir(out)) == ["mid.json", "report.html"]


def test_ifa_cli_from_stored_feature_maps_equals_the_network_path(prepared, ifa_run_out, tmp_path, capsys):
    """`wsca ifa --embeddings` on a `wsca embed --feature-maps` file: CAM only, the same importance,
    decomposition and confounder channels as `--run` (the same options but the region, which needs the
    network); what needs the network is one line, exit 2."""
    d = prepared
    e = tmp_path / "maps.npz"
    assert main(["embed", "--run", str(d / "run"), "--tfds-dir", str(d / "tfds"), "--split", "test",
                 "--feature-maps", "--out", str(e)]) == 0
    assert main(["ifa", "--embeddings", str(e), "--primary", "label", "--random-masks", "3",
                 "--out", str(tmp_path / "b")]) == 0
    assert len(list((tmp_path / "b").glob("*.png"))) == 4                 # maps without the image rows
    ra, rb = (json.loads((p / "ifa.json").read_text()) for p in (ifa_run_out, tmp_path / "b"))
    assert rb["stored_maps"] and rb["n"] == ra["n"] and rb["classes"] == ra["classes"]
    assert rb["confounders"]["site"]["channels"] == ra["confounders"]["site"]["channels"]
    for x, y in zip(ra["decomposition"], rb["decomposition"]):
        assert (x["mode"], x["channels"]) == (y["mode"], y["channels"]) and x["auroc"] == pytest.approx(y["auroc"], abs=1e-6)
    with np.load(ifa_run_out / "ifa_importance.npz") as za, np.load(tmp_path / "b" / "ifa_importance.npz") as zb:
        np.testing.assert_allclose(zb["importance"], za["importance"], rtol=1e-4, atol=1e-5)
    capsys.readouterr()
    for extra, msg in ((["--method", "gradcam"], "support CAM only"), (["--region", "0:2,0:4"], "not at image resolution"),
                       (["--layer", "conv1b"], "other layers need --run"), ([], "--primary needed (heads: label, site)"),
                       (["--primary", "scanner"], "no head_scanner"),
                       (["--split", "train"], "--split: go with --run"),
                       (["--run", str(d / "run")], "--run or --embeddings (one of them)")):
        out = tmp_path / "bad"
        assert main(["ifa", "--embeddings", str(e), *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
        assert not out.exists()


# ---- a full disk (issue 27): one line, exit 2, nothing left behind

def _limited(argv, limit, cwd):
    """``wsca argv`` in a subprocess whose files may not grow beyond ``limit`` bytes (RLIMIT_FSIZE,
    SIGXFSZ ignored): every larger write fails (EFBIG), as every write does on a full disk."""
    limits = ("import resource, runpy, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
              "runpy.run_module('wsca_jax.cli', run_name='__main__')")
    return subprocess.run([sys.executable, "-c", limits, *argv], capture_output=True, text=True, cwd=cwd)


def _nothing_left(folder):
    """No output and no temporary file or folder of ours (or Orbax's) anywhere under ``folder``."""
    left = [os.path.join(r, n) for r, ds, fs in os.walk(folder) for n in ds + fs
            if n.startswith((".tmp-", ".wsca-tmp")) or "orbax-checkpoint-tmp" in n]
    assert not left, left


@pytest.mark.parametrize("command,limit", [("analyze", 3000), ("embed", 3000), ("train", 200_000)])
def test_a_full_disk_is_one_line_and_leaves_nothing(prepared, tmp_path, command, limit):
    d = prepared
    out = tmp_path / "out" / ("e.npz" if command == "embed" else "res")
    argv = {"analyze": ["analyze", "--embeddings", str(d / "emb.npz"), "--primary", "label", "--bootstrap", "0",
                        "--permutations", "0", "--quiet"],
            "embed": ["embed", "--run", str(d / "run"), "--tfds-dir", str(d / "tfds")],
            "train": ["train", *[x.format(d=d) for x in T], "--quiet"]}[command]
    r = _limited(argv + ["--out", str(out)], limit, tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert lines[0].startswith(f"wsca {command}: error: cannot write") and "File too large" in lines[0]
    assert "nothing written" in lines[0] and not os.path.exists(out)
    _nothing_left(tmp_path)


def test_a_full_disk_after_a_finished_epoch_keeps_it_for_resume(prepared, tmp_path, capsys, monkeypatch):
    """Epoch 0 checkpointed, epoch 1's checkpoint fails for want of space (its Orbax temporary folder
    half-written): one line that says the run keeps epoch 0, the temporary folder removed, and
    --resume then ends where the uninterrupted run ends."""
    import errno

    import orbax.checkpoint as ocp
    d = prepared
    run = tmp_path / "full"
    save = ocp.CheckpointManager.save

    def failing(self, step, *args, **kwargs):
        if step == 1:
            os.makedirs(os.path.join(self.directory, "1.orbax-checkpoint-tmp-123"))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(self, step, *args, **kwargs)
    monkeypatch.setattr(ocp.CheckpointManager, "save", failing)
    assert main(["train", *[x.format(d=d) for x in T], "--quiet", "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "epochs up to 0" in err[0] and "--resume" in err[0]
    _nothing_left(run)
    assert os.listdir(run / "ckpt" / "latest") == ["0"]
    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    assert main(["train", *[x.format(d=d) for x in T], "--quiet", "--resume", "--out", str(run)]) == 0
    _same_run(run, d / "run")
