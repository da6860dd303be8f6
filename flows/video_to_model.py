"""Prefect flow `video-to-model`: raw videos -> feature store -> trained model -> evaluation -> report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from feature_schemas import Store, coverage_column
from flows.build_features import DEFAULT_FACE, extract_video_features
from flows.summary import artifact_markdown, metrics_tables
from flows.timeline import explain_segment
from flows.train_model import train_mmolre
from pipelines.collapse import Mode
from pipelines.leakage import leakage_lines

SMALL_TEST = 100  # segments: below this a test score shows that the pipeline runs, not how good the model is


def pick_example(store: str | Path) -> str | None:
    """A test (else valid) segment for the report's timeline: most modalities covered, then most words."""
    s = Store(store)
    cov = [coverage_column(m) for m in s.aligned_sets()]
    for split in ("test", "valid", "train"):
        if split in s.splits():
            rows = s.aligned(split, columns=["segment_id", "words", *cov]).to_pylist()
            if rows:
                def richness(r: dict[str, Any]) -> tuple[int, int, str]:
                    return (sum(any(c > 0 for c in r[k]) for k in cov), len(r["words"]), r["segment_id"])

                return max(rows, key=richness)["segment_id"]
    return None


def honesty_lines(build: dict[str, Any]) -> list[str]:
    """What the test score can and cannot say: split sizes, leakage between splits, a too small test set."""
    sizes = build["counts"]["segments"]
    lines = ["## What the test score can say", "",
             "Split sizes: " + ", ".join(f"{s} {n}" for s, n in sizes.items()) + ".", "",
             *[f"    {line}" for line in leakage_lines(build.get("leakage"))], ""]
    n_test = sizes.get("test", 0)
    if n_test < SMALL_TEST:
        lines += [f"The test split has {n_test} segments: a test set this small proves only that the pipeline runs; "
                  "its scores say nothing about how well the model does.", ""]
    return lines


def write_pipeline_report(out: Path, build: dict[str, Any], train: dict[str, Any], example: dict[str, Any] | None) -> Path:
    lines = [
        "# Video to model", "",
        f"- feature store: `{build['store']}` (dataset card: `{build['store']}/README.md`)",
        f"- model run: `{train['run']}` (training report: `{train['run']}/report.md`)", "",
        "## Store", "", "| split | segments |", "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in build["counts"]["segments"].items()], "",
        f"Failures: {build['counts']['failures']}" + "".join(
            f"\n- {f['item_id']} [{f['stage']}]: {f['reason']}" for f in build["failures"][:20]), "",
        *honesty_lines(build),
        "## Test metrics", "",
        *metrics_tables(train, ("test",), "###"),
    ]
    if example:
        s = example["sentiment"]
        truth = example["truth"]["sentiment"]
        truth = "unknown" if truth is None else truth if isinstance(truth, str) else f"{truth:+.2f}"  # float32 labels: 1.8 not 1.7999999523
        lines += [f"## One example: `{example['segment_id']}`", "", f"> {example.get('transcript') or ''}", "",
                  f"Predicted sentiment {s if isinstance(s, str) else f'{s:+.2f}'}, truth {truth}.", ""]
        if example.get("plot"):
            lines += [f"![word timeline]({Path(example['plot']).name})", ""]
        faces = any(r.get("face_expression") for r in example["timeline"])
        lines += ["| word | start | end | " + " | ".join(f"weight ({t})" for t in example["modality_weights"])
                  + (" | face expression" if faces else "") + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in example["modality_weights"]) + (" | ---" if faces else "") + " |"]
        for r in example["timeline"]:
            t0 = "" if r["start"] is None else f"{r['start']:.2f}"
            t1 = "" if r["end"] is None else f"{r['end']:.2f}"
            fe = r.get("face_expression")
            lines.append(f"| {r['word']} | {t0} | {t1} | " + " | ".join(f"{r['weights'][t]:.3f}" for t in example["modality_weights"])
                         + ((f" | {fe['top']} {fe['p']:.2f}" if fe else " | ") if faces else "") + " |")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


@flow(name="video-to-model", log_prints=True)
def video_to_model(
    input: str,
    out: str,
    face: str | None = DEFAULT_FACE,
    fps: float | None = None,
    mode: Mode = "weighted",
    model: str = "mmolre",
    epochs: int | None = None,
    config_file: str | None = None,
    overrides: list[str] | None = None,
    seed: int | None = None,
    dask_address: str | None = None,
    n_workers: int | None = None,
    emotion_classes: str | None = None,
) -> dict[str, Any]:
    """Point it at videos with transcripts and labels; get a reusable store, a trained model and a report.

    Args:
        input: An MMSA-FET folder, a manifest (CSV/JSONL with video_path, transcript, labels, split) or one video
            file; an absolute path on the machine serving this flow.
        out: Folder for everything it makes (store/, run/, report.md, timeline.png), an absolute path on the
            serving machine.
        face: Face backend by name (`mmolre extractors` lists them) or none.
        fps: Face frames sampled per second; empty: 5.
        mode: How a word's frames collapse to one vector: mean, weighted (by overlap), max or std.
        model: mmolre, hard-sharing, dense-moe or single-task.
        epochs: Training epochs; empty: the configuration's.
        config_file: A TrainConfig YAML/JSON file on the serving machine; empty: the defaults.
        overrides: TrainConfig settings as key=value (e.g. epochs=2, batch_size=16), applied last.
        seed: Random seed; empty: the configuration's.
        dask_address: An existing Dask scheduler (tcp://host:8786); empty: a local cluster on the serving machine.
        n_workers: Worker processes of the local cluster (empty: one per core, fewer if memory is short; 0: inline,
            no Dask).
        emotion_classes: meld, cremad, ravdess, iemocap or comma-separated class names; empty: found from the labels.
    """
    logger = get_run_logger()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    store, run = str(root / "store"), str(root / "run")
    build = extract_video_features(input=input, store=store, face=face, fps=fps, mode=mode,
                                   dask_address=dask_address, n_workers=n_workers, emotion_classes=emotion_classes)
    trained = train_mmolre(store=store, out=run, model=model, config_file=config_file, overrides=overrides,
                           epochs=epochs, seed=seed)
    example_id = pick_example(store)
    example = explain_segment(store, run, example_id, root / "timeline.png") if example_id else None
    report = write_pipeline_report(root, build, trained, example)
    (root / "summary.json").write_text(json.dumps({"build": build, "train": trained}, indent=2, default=str) + "\n")
    create_markdown_artifact(artifact_markdown(report.read_text(), str(root)), key="video-to-model-report",
                             description=f"video-to-model {out}")
    logger.info("store %s, model %s, report %s", store, run, report)
    return {"store": store, "run": run, "report": str(report), "test": trained.get("test")}
