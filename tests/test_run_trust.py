"""Results a user can trust (issue 11): every figure carries its n, undefined metrics say n/a (JSON null),
headline metrics carry bootstrap intervals, the run records what it trained on, and stores with missing
splits, constant labels or an empty modality train and say so. Real training runs on small synthetic stores,
the real CLI code, real files."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from feature_schemas import Manifest, sha256_file
from flows.cli import main as cli
from mmolre import TrainConfig, evaluate, train
from mmolre.inference import run_summary
from mmolre.metrics import HEADLINE
from mmolre.report import plot_class_f1
from tests.store_fixtures import TINY_ARCH, one_torch_thread, synthetic_store  # noqa: F401 (autouse fixture)


def tiny(**kw: object) -> TrainConfig:
    base: dict = dict(epochs=2, batch_size=16, lr=3e-3, progress=False, arch=dict(TINY_ARCH), seed=0)
    return TrainConfig.from_dict({**base, **kw})


def strict_json(path: Path) -> dict[str, Any]:
    """Parse JSON refusing NaN / Infinity, which json.loads would otherwise accept."""
    def refuse(c: str) -> None:
        raise AssertionError(f"{path}: {c} in JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def set_labels(store: Path, split: str, column: str, value: float) -> None:
    """Give every segment of one split the same label (rewriting its shards and their manifest checksums)."""
    m = Manifest.load(store)
    for rel, entry in list(m.files.items()):
        if entry.table == "segments" and entry.split == split:
            t = pq.read_table(store / rel)
            i = t.schema.get_field_index(column)
            t = t.set_column(i, t.schema.field(i), pa.array([value] * t.num_rows, t.schema.field(i).type))
            pq.write_table(t, store / rel)
            m.files[rel] = dataclasses.replace(entry, sha256=sha256_file(store / rel))
    m.save(store)


@pytest.fixture(scope="module")
def mosei(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("mosei"), "mosei", sizes={"train": 96, "valid": 32, "test": 40}, noise=0.7)


@pytest.fixture(scope="module")
def run(mosei: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train(mosei, out, "mmolre", tiny())
    return out


def test_results_json_carries_support_intervals_and_provenance(run: Path, mosei: Path) -> None:
    r = strict_json(run / "results.json")
    assert r["run"] == str(run.resolve())
    assert r["store"] == {"path": str(mosei.resolve()), "manifest_sha256": sha256_file(mosei / "manifest.json")}
    assert r["splits"] == {"train": 96, "valid": 32, "test": 40}
    assert r["params"]["total"] >= r["params"]["trainable"] == r["parameters"]["total"] > 0
    for split in ("valid", "test"):
        sent, emo = r[split]["sentiment"], r[split]["emotion"]
        assert sent["n"] == r["splits"][split] and isinstance(sent["mae"], float)  # the plain number stays at its key
        assert sent["has0_n_pos"] + sent["has0_n_neg"] == sent["n"] and sent["non0_n"] == sent["non0_n_pos"] + sent["non0_n_neg"]
        for e in ("happy", "sad", "anger", "surprise", "disgust", "fear"):
            assert emo[f"{e}_n_pos"] + emo[f"{e}_n_neg"] == emo["n"]
        for task, kind in (("sentiment", "regression"), ("emotion", "multilabel")):
            for k in HEADLINE[kind]:
                m = r[split][task]
                if m[k] is None:
                    assert m[f"{k}_ci"] is None
                else:
                    low, high = m[f"{k}_ci"]
                    assert low <= high and low - 1e-9 <= m[k] <= high + 1e-9, (split, task, k)


def test_config_json_is_the_trained_architecture_and_round_trips(run: Path, mosei: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    saved = json.loads((run / "config.json").read_text())
    assert saved["arch"]["input_dims"] == {"audio": 8, "text": 16}  # the store's dims, not the defaults (text 384 + audio 74)
    assert [t["name"] for t in saved["arch"]["tasks"]] == ["sentiment", "emotion"] and saved["tasks"] == ["sentiment", "emotion"]
    assert saved["feature_sets"] == ["audio", "text"] and saved["arch"]["d_model"] == TINY_ARCH["d_model"]
    assert strict_json(run / "results.json")["arch"] == saved["arch"]
    # --config with that file trains the same model again
    assert cli(["train", "--store", str(mosei), "--out", str(tmp_path / "again"), "--config", str(run / "config.json"),
                "--epochs", "1"]) == 0
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert again["arch"] == saved["arch"] and again["epochs"] == 1
    out = capsys.readouterr().out
    assert re.search(r"^test: sentiment \(n=40; present/absent|^test: sentiment \(n=40\)", out, re.M), out
    assert "emotion (n=40; present/absent happy " in out and "mae=" in out and re.search(r"mae=\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", out)


def test_evaluate_names_run_and_store_on_stderr_and_json_stays_pure(run: Path, mosei: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["evaluate", "--run", str(run), "--json"]) == 0
    cap = capsys.readouterr()
    doc = json.loads(cap.out, parse_constant=lambda c: pytest.fail(f"{c} in evaluate --json"))
    assert doc["n"] == 40 and doc["metrics"]["sentiment"]["n"] == 40 and doc["metrics"]["sentiment"]["mae_ci"]
    assert doc["store_manifest_sha256"] == sha256_file(mosei / "manifest.json")
    assert str(run) in cap.err and str(mosei.resolve()) in cap.err and "tested on 40 segments" in cap.err
    assert "the run's training store" in cap.err
    info = run_summary(run)
    assert info["test_n"] == 40 and info["model"] == "mmolre" and info["store"] == str(mosei.resolve())


def test_predict_warns_about_a_run_tested_on_few_segments(run: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # the announcement comes before any video work, so a missing video still shows it (then fails cleanly)
    assert cli(["predict", str(tmp_path / "missing.mp4"), "--run", str(run)]) == 1
    err = capsys.readouterr().err
    assert f"run {run}" in err and "tested on 40 segments" in err
    assert "warning: the run" in err and "fewer than 100" in err and f"input {tmp_path / 'missing.mp4'} does not exist" in err


def test_predict_says_what_the_video_path_is(run: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """As `build` does: never "unexpected ... report it", and a FIFO is never opened (it would block)."""
    os.mkfifo(tmp_path / "pipe.mp4")
    for path, says in ((tmp_path / "pipe.mp4", "is a named pipe (FIFO), not a media file"),
                       (tmp_path, "is a folder, not a media file"), (Path("/dev/null"), "is a device, not a media file")):
        assert cli(["predict", str(path), "--run", str(run)]) == 1
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("mmolre: error:")]
        assert err == [f"mmolre: error: input {path} {says}"]


def test_run_summary_reads_the_run_as_it_is_now(run: Path, tmp_path: Path) -> None:
    """A caller's copy is its own, and a run whose results change is read as changed (`mmolre predict` reads the
    summary once and hands it to `predict_video`)."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    first = run_summary(copy)
    first["model"] = "changed by a caller"
    assert run_summary(copy)["model"] == "mmolre"
    results = json.loads((copy / "results.json").read_text())
    for block in results["test"].values():
        if isinstance(block, dict) and "n" in block:
            block["n"] = 7
    (copy / "results.json").write_text(json.dumps(results) + "\n")
    assert run_summary(copy)["test_n"] == 7


def test_store_without_test_split_trains_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = synthetic_store(tmp_path / "store", "mosei", sizes={"train": 64, "valid": 24})
    out = tmp_path / "run"
    assert cli(["train", "--store", str(store), "--out", str(out), "--epochs", "1", "--set", "progress=false",
                "--set", f"arch={json.dumps(TINY_ARCH)}"]) == 0
    cap = capsys.readouterr()
    assert "test: none (the store" in cap.out and "no test split" in cap.out
    assert re.search(r"^valid: sentiment \(n=24", cap.out, re.M)
    assert "mmolre: warning: no test split" in cap.err
    r = strict_json(out / "results.json")
    assert r["status"] == "completed" and "test" not in r and any("no test split" in w for w in r["warnings"])
    assert "No test split in the store" in (out / "report.md").read_text()
    assert run_summary(out)["test_n"] == 0


def test_store_without_valid_split_says_what_it_selects_on(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "store", "mosi", sizes={"train": 64, "test": 24})
    r = train(store, tmp_path / "run", "mmolre", tiny(select_metric="sentiment/mae"))
    assert r["select_metric"] == "train_loss" and r["best_epoch"] == 2
    assert any("no valid split" in w and "train_loss, not sentiment/mae" in w for w in r["warnings"])


def test_zero_coverage_modality_is_left_out_and_named(tmp_path: Path) -> None:
    # every audio word uncovered: a store built from transcripts only has no usable audio
    store = synthetic_store(tmp_path / "store", "mosi", sizes={"train": 64, "valid": 16, "test": 16}, uncovered=1.0)
    r = train(store, tmp_path / "run", "mmolre", tiny())
    assert r["feature_sets"] == ["text"] and set(r["dropped_feature_sets"]) == {"audio"}
    assert any("'audio' left out" in w for w in r["warnings"])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["arch"]["input_dims"] == {"text": 16} and saved["feature_sets"] == ["text"]
    assert "left out: feature set `audio`" in (tmp_path / "run" / "report.md").read_text()
    assert evaluate(tmp_path / "run")["metrics"]["sentiment"]["n"] == 16  # the run works without the set


def test_constant_labels_are_warned_about_and_reported_na(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = synthetic_store(tmp_path / "store", "mosei", sizes={"train": 64, "valid": 16, "test": 24})
    set_labels(store, "test", "sentiment", 0.0)
    set_labels(store, "test", "fear", 0.0)
    assert cli(["train", "--store", str(store), "--out", str(tmp_path / "run"), "--epochs", "1", "--set", "progress=false",
                "--set", f"arch={json.dumps(TINY_ARCH)}"]) == 0
    cap = capsys.readouterr()
    assert "every one of the 24 sentiment labels of the test split is 0" in cap.err
    assert "fear: one class only in the emotion labels of the test split" in cap.err
    r = strict_json(tmp_path / "run" / "results.json")
    sent, emo = r["test"]["sentiment"], r["test"]["emotion"]
    assert sent["corr"] is None and sent["corr_ci"] is None and sent["non0_acc2"] is None and sent["non0_n"] == 0
    assert emo["fear_f1"] is None and emo["fear_n_pos"] == 0 and emo["fear_n_neg"] == 24
    assert "corr=n/a" in cap.out and "fear 0/24" in cap.out
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| corr | n/a |  |" in report and "| fear | 0 | 24 | " in report
    assert not re.search(r"\d\.\d{5,}", report)  # numbers are rounded, never 1.7999999523162842
    assert pc.all(pc.equal(pq.read_table(store / "segments" / "test").column("sentiment"), 0.0)).as_py()


def test_class_f1_plot_draws_every_class_task_with_na(tmp_path: Path) -> None:
    tasks = [{"name": "sentiment", "kind": "multiclass", "classes": ["negative", "neutral", "positive"]},
             {"name": "emotion", "kind": "multilabel", "classes": ["happy", "fear"]}]
    metrics = {"sentiment": {"n": 5, "negative_f1": 0.5, "neutral_f1": None, "positive_f1": 1 / 3,
                             "negative_n": 3, "neutral_n": 0, "positive_n": 2},
               "emotion": {"n": 5, "happy_f1": 0.8, "fear_f1": None, "happy_n_pos": 2, "happy_n_neg": 3, "fear_n_pos": 0, "fear_n_neg": 5}}
    path = plot_class_f1(tasks, metrics, tmp_path / "f1.png")
    assert path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_artifact_lists_plots_and_shows_na(run: Path) -> None:
    from flows.train_model import metrics_markdown

    results = strict_json(run / "results.json")
    results["test"]["sentiment"]["corr"], results["test"]["sentiment"]["corr_ci"] = None, None
    md = metrics_markdown(results, str(run))
    assert "![" not in md  # a relative image link renders broken in the Prefect UI: plots are listed as paths
    assert f"`{run}/emotion_f1.png`" in md and "## test / sentiment (n = 40)" in md
    assert "| corr | n/a |  |" in md and re.search(r"\| mae \| \d\.\d{3} \| \[\d\.\d{3}, \d\.\d{3}\] \|", md)
    assert "_n_pos" not in md  # counts are in the headings and the report, not mixed into the metric rows


def test_report_images_become_paths_in_artifacts() -> None:
    from flows.summary import artifact_markdown

    md = "# r\n![word timeline](timeline.png)\n![](sub/x.png) ![web](https://example.org/a.png)"
    out = artifact_markdown(md, "/runs/r1")
    assert "word timeline: `/runs/r1/timeline.png`" in out and "plot: `/runs/r1/sub/x.png`" in out
    assert "![web](https://example.org/a.png)" in out and "![word" not in out
