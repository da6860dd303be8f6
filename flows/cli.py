"""The `mmolre` command: build stores, inspect them, train, evaluate and predict.

Each subcommand calls the plain functions of `pipelines` and `mmolre` (no Prefect server needed); the Prefect
deployments call the same functions. Exit codes (docs/contracts.md): 0 done, 1 error (one line on stderr,
`mmolre: error: <what, which path/value, what to do>`; `--debug` before or after the subcommand shows the
traceback instead), 2 usage error, 3 done but items failed (with --strict) or validate found problems, 4 a build
wrote no segment at all, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from feature_schemas.storage import scrub
from flows.options import UsageError, count, model_settings, seed, text_settings, train_config
from pipelines.extract.registry import help_text as extractor_help
from pipelines.extract.registry import names as extractor_names

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILURES = 0, 1, 2, 3  # argparse exits 2 on usage errors, as UsageError does
EXIT_EMPTY, EXIT_INTERRUPTED = 4, 130  # EXIT_EMPTY: a build wrote no segment at all


def _scrub_record(record: logging.LogRecord) -> bool:
    """A log line never carries a credential, whoever built it: redacted as it is emitted."""
    message = record.getMessage()
    if (clean := scrub(message)) != message:
        record.msg, record.args = clean, None
    return True


def _escape(text: object) -> str:
    """Ids and paths come from files we did not write: show control characters repr-style, never raw."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


# -- inspect / validate -----------------------------------------------------------------------------
def inspect_store(path: str | os.PathLike) -> dict[str, Any]:
    import pyarrow.compute as pc

    from feature_schemas import SPLITS, Store

    store = Store(path)
    m = store.manifest
    words = {}
    for split in store.splits():
        t = store.aligned(split, columns=["words"])
        words[split] = int(pc.sum(pc.list_value_length(t.column("words"))).as_py() or 0)
    failures = store.failures().to_pylist() if store.files("failures") else []
    by_stage: dict[str, int] = {}
    for f in failures:
        by_stage[f["stage"]] = by_stage.get(f["stage"], 0) + 1
    return {
        "store": str(store.path),
        "name": m.name,
        "schema_version": m.schema_version,
        "segments": {s: m.rows("segments", s) for s in SPLITS},
        "words": words,
        "feature_sets": {
            n: {"dim": fs.dim, "modality": fs.modality, "extractor": f"{fs.extractor} {fs.extractor_version}".strip(),
                "frame_rate": fs.frame_rate, "dims": list(fs.dims), "level": fs.level}
            for n, fs in m.feature_sets.items()
        },
        "frame_sets": store.frame_sets(),
        "utterance_sets": store.utterance_sets(),
        "utterance_rows": {s: m.rows("utterance", s) for s in SPLITS if m.rows("utterance", s)},
        "failures": {"total": len(failures), "by_stage": by_stage, "items": failures[:100]},
        "report": m.report,
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_store(args.store)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return EXIT_OK
    print(f"{info['name']}  (schema {info['schema_version']})  {info['store']}")
    for s, n in info["segments"].items():
        print(f"  {s:<5} {n:>7} segments {info['words'].get(s, 0):>9} words")
    print("feature sets:")
    for n, fs in info["feature_sets"].items():
        rate = f"{fs['frame_rate']:g}/s" if fs["frame_rate"] else f"{fs['level']}-level"
        print(f"  {n:<16} {fs['dim']:>5}-d  {fs['modality']:<7} {fs['extractor']:<24} {rate}   {', '.join(fs['dims'][:4])}, ...")
    if info["frame_sets"]:
        print("frame-level sets kept: " + ", ".join(info["frame_sets"]))
    if info["utterance_sets"]:
        rows = ", ".join(f"{s} {n}" for s, n in info["utterance_rows"].items())
        print(f"utterance-level sets (one vector per segment; utterance table: {rows}): " + ", ".join(info["utterance_sets"]))
        if len(info["utterance_sets"]) == len(info["feature_sets"]):
            print("aligned/ holds the words only (no word-level feature set)")
    f = info["failures"]
    print(f"failures: {f['total']}" + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(f["by_stage"].items())) + ")" if f["total"] else ""))
    for item in f["items"][:10]:
        print(f"  {_escape(item['item_id'])} [{item['stage']}]: {_escape(item['reason'])}")
    from pipelines.leakage import leakage_lines

    for line in leakage_lines(info["report"].get("leakage")):
        print(line)
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from feature_schemas import validate
    from feature_schemas.storage import display

    report = validate(args.store)  # a path or a URL (s3://bucket/prefix: objects checked in place)
    print("\n".join(_escape(line) for line in f"{display(args.store)}: {report}".splitlines()))
    return EXIT_OK if report.ok else EXIT_FAILURES


# -- model ------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from feature_schemas.storage import display
    from flows.summary import metrics_line
    from mmolre.evaluation import results_json
    from mmolre.train import train

    config = train_config(args.config, args.set, **model_settings(args.model, args.task), epochs=args.epochs,
                          seed=args.seed, device=args.device, context=True if args.context else None,
                          **text_settings(args.text_encoder, args.text_model))
    results = train(args.store, args.out, config=config, overwrite=args.overwrite)
    if args.json:
        print(results_json(results.get("test", results)))
    else:
        for w in results.get("warnings") or []:
            print(f"mmolre: warning: {w}", file=sys.stderr)
        print(f"selected: epoch {results.get('best_epoch')} by {results.get('select_metric')}")
        if results.get("test"):
            print(metrics_line("test", results["test"]))
        else:
            print(f"test: none (the store {_escape(display(args.store))} has no test split; the run is not tested)")
            if results.get("valid"):
                print(metrics_line("valid", results["valid"]))
    print(f"run: {args.out} (report: {Path(args.out) / 'report.md'})")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from mmolre.registry import REFERENCE_TEXT, catalogue

    rows = catalogue()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for r in rows:
        print(f"{r['name'].replace('_', '-'):<14} {r['parameters']:>10,}  {r['inputs']:<9} {_escape(r['paper'])}")
    print(f"({REFERENCE_TEXT}; `--model single-task --task emotion`: mmolre on one task; any model takes --task)")
    return EXIT_OK


def _announce_run(run: str, store: str | None) -> dict[str, Any]:
    """Say on stderr which run and store are used and how well tested the run is (stdout stays pure for --json)."""
    from mmolre.inference import describe_run, run_summary

    info = run_summary(run)
    print(f"mmolre: {describe_run(info, store)}", file=sys.stderr)
    return info


def cmd_evaluate(args: argparse.Namespace) -> int:
    from flows.summary import metrics_line
    from mmolre.evaluation import results_json
    from mmolre.inference import evaluate

    _announce_run(args.run, args.store)
    metrics = evaluate(args.run, split=args.split, store=args.store)
    print(results_json(metrics) if args.json else metrics_line(metrics["split"], metrics["metrics"]))
    return EXIT_OK


# A run tested on fewer segments than this gives predictions whose quality is barely known.
PREDICT_MIN_TEST_N = 100


def cmd_predict(args: argparse.Namespace) -> int:
    from flows.predict import predict_video
    from mmolre.evaluation import results_json

    info = _announce_run(args.run, None)
    if info["test_n"] < PREDICT_MIN_TEST_N:
        print(f"mmolre: warning: the run {args.run} was tested on {info['test_n']} segments (fewer than "
              f"{PREDICT_MIN_TEST_N}): how far to trust its predictions is barely known", file=sys.stderr)
    out = predict_video(args.video, args.run, transcript=args.transcript, face=args.face, summary=info)
    if args.json:
        print(results_json(out))
    else:
        s = out["sentiment"]
        print(f"{args.video}: sentiment {s if isinstance(s, str) else f'{s:+.2f}'}")
        if out.get("emotions"):
            print("emotions: " + ", ".join(f"{k} {v:.2f}" for k, v in out["emotions"].items()))
        for w in out.get("timeline", [])[:40]:
            face = w.get("face_expression")
            print(f"  {w['start']:6.2f}-{w['end']:6.2f}  {w['word']:<14} " + " ".join(f"{k}={v:.2f}" for k, v in w["weights"].items())
                  + (f"  face: {face['top']} {face['p']:.2f}" if face else ""))
    return EXIT_OK


def cmd_extractors(args: argparse.Namespace) -> int:
    """Every registered extractor: kind, dimensions, version and whether it can run here (why not)."""
    from pipelines.extract.registry import describe

    infos = describe()
    if args.json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
        return EXIT_OK
    rows = [(i.name, i.kind, "-" if i.dims is None else str(i.dims), i.version or "-",
             "yes" if i.available else f"no: {_escape(i.reason)}") for i in infos]
    header = ("name", "kind", "dims", "version", "available")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(4)]
    for r in [header, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r[:4], widths, strict=True)) + "  " + r[4])
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import run_demo

    run_demo(args.out)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "csd":
        from pipelines.export.csd import export_csd_sets

        for path in export_csd_sets(args.store, args.out, args.sets, level=args.level, timeline=args.timeline):
            print(f"wrote {path}")
        return EXIT_OK
    from pipelines.export.mmsa import write_mmsa

    report = write_mmsa(args.store, args.out, text=args.text, audio=args.audio, vision=args.vision, layout=args.layout,
                        seq_len=args.seq_len, frame_len=args.frame_len, bert_len=args.bert_len, tokenizer=args.tokenizer,
                        text_bert=not args.no_text_bert)
    if args.json:
        print(json.dumps(report.summary(), indent=2))
        return EXIT_OK
    print(f"wrote {report.path} ({report.layout}; {', '.join(f'{k} {v}' for k, v in report.segments.items())} segments)")
    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if report.unlabeled:
        print(f"left out (no sentiment score): {', '.join(report.unlabeled)}", file=sys.stderr)
    return EXIT_OK


# -- parser -----------------------------------------------------------------------------------------
def _add_export_command(sub: Any) -> None:
    """`mmolre export csd|mmsa`: a store's features for the SDK and MMSA."""
    p = sub.add_parser("export", help="write a store's features for other toolkits")
    p.add_argument("format", choices=("csd", "mmsa"))
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True, help="folder (csd) or .pkl path (mmsa)")
    p.add_argument("--sets", nargs="+", help="feature sets to export (csd; default: every set)")
    p.add_argument("--level", choices=("word", "frame"), default="word", help="csd: word-level or frame-level rows")
    p.add_argument("--timeline", default=None, metavar="LABELS.csd",
                   help="csd: place segments without times by a release's labels file (segment VIDEO_N = its N-th interval)")
    p.add_argument("--text", default=None, help="mmsa: text feature set (default: the first)")
    p.add_argument("--audio", default=None, help="mmsa: audio feature set")
    p.add_argument("--vision", default=None, help="mmsa: visual feature set")
    p.add_argument("--layout", choices=("aligned", "unaligned"), default="aligned",
                   help="mmsa: every modality per word (aligned), or audio/vision as frames (unaligned, needs --keep-frames)")
    p.add_argument("--seq-len", type=count, default=None, help="mmsa: cut sequences to this length (default: the longest)")
    p.add_argument("--frame-len", type=count, default=None, help="mmsa unaligned: cut frames to this length (default: the longest)")
    p.add_argument("--bert-len", type=count, default=None, help="mmsa: text_bert tokens (default: L aligned, the longest unaligned)")
    p.add_argument("--tokenizer", default=None, help="mmsa: local BERT tokenizer folder for text_bert (default: packaged MiniLM's)")
    p.add_argument("--no-text-bert", action="store_true", help="mmsa: write no text_bert")
    p.add_argument("--json", action="store_true", help="mmsa: print the export's summary as JSON")
    p.set_defaults(func=cmd_export)


def _add_train_command(sub: Any) -> None:
    """`mmolre train`: the store, the run folder, the model and its settings."""
    p = sub.add_parser("train", help="train MMoLRE or a baseline on a store")
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True, help="run folder (checkpoints, results.json, report.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run of another model or configuration in --out (only a run's files), or write "
                        "into a non-empty folder that is not a run")
    p.add_argument("--model", default=None, metavar="NAME",
                   help="a registered model (`mmolre models` lists them: mmolre, hard-sharing, dense-moe, ...) or "
                        "single-task (mmolre on --task); default: the --config's, else mmolre")
    p.add_argument("--task", choices=("sentiment", "emotion"), default=None,
                   help="train on this task alone (any model; the task of --model single-task, default sentiment)")
    p.add_argument("--config", default=None, help="YAML or JSON TrainConfig (see mmolre/config.py)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting, e.g. --set lr=1e-3 --set arch.d_model=64 (repeatable)")
    p.add_argument("--epochs", type=count, default=None)
    p.add_argument("--seed", type=seed, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--text-encoder", choices=("frozen", "finetune"), default=None,
                   help="frozen: the store's word vectors (default); finetune: run and train a Hugging Face encoder "
                        "over the store's words in the model (replaces the store's text set)")
    p.add_argument("--text-model", default=None, metavar="PATH",
                   help="local Hugging Face model folder for --text-encoder finetune (default: the packaged MiniLM)")
    p.add_argument("--context", action="store_true",
                   help="utterance-level stores: the model sees each utterance with the others of its video "
                        "(a bidirectional GRU over the video, bc-LSTM style; = --set context=true)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mmolre", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True)

    from flows.build_cli import add_build_commands

    add_build_commands(sub.add_parser("build", help="build a feature store").add_subparsers(dest="source", required=True))

    p = sub.add_parser("inspect", help="segments, words, feature sets and failures of a store")
    p.add_argument("store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("validate", help="check a store against its schema and checksums (exit 3 if invalid)")
    p.add_argument("store")
    p.set_defaults(func=cmd_validate)

    _add_export_command(sub)

    _add_train_command(sub)

    p = sub.add_parser("models", help="the models --model trains: name, parameters, inputs, paper")
    p.add_argument("--json", action="store_true", help="one object per model (name, paper, inputs, defaults_from, "
                   "summary, parameters)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("evaluate", help="evaluate a run's best checkpoint")
    p.add_argument("--run", required=True)
    p.add_argument("--split", default="test", choices=("train", "valid", "test"))
    p.add_argument("--store", default=None, help="another store with the same feature sets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="sentiment and emotions of one video, with a word-level timeline")
    p.add_argument("video")
    p.add_argument("--run", required=True)
    p.add_argument("--transcript", default=None, help="what is said (else speech recognition)")
    p.add_argument("--face", choices=(*extractor_names("face"), "none"), default=None,
                   help=f"face backend (default: the one the run's training store was built with): {extractor_help('face')}")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("extractors", help="audio, face, text extractors, aligners, recognisers: dims, version, can they run here")
    p.add_argument("--json", action="store_true", help="a JSON list of {name, kind, dims, dim_names, version, available, reason}")
    p.set_defaults(func=cmd_extractors)

    p = sub.add_parser("demo", help="the whole path on bundled media: videos -> store -> model -> report")
    p.add_argument("--out", default="demo_out")
    p.set_defaults(func=cmd_demo)
    _debug_everywhere(ap)
    return ap


def _debug_everywhere(ap: argparse.ArgumentParser) -> None:
    """`--debug` is accepted after any subcommand too; SUPPRESS keeps a flag given before it."""
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
                _debug_everywhere(sub)


_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _our_errors() -> tuple[type, ...]:
    """Our error types among the modules loaded (an error can only come from a loaded module; importing
    mmolre just to name RunError would load torch)."""
    where = {"feature_schemas.errors": "StoreError", "pipelines.errors": "PipelineError", "mmolre.errors": "RunError",
             "flows.options": "OptionError"}
    return tuple(getattr(sys.modules[m], n) for m, n in where.items() if m in sys.modules)


def error_message(e: BaseException, where: str | None = None) -> str:
    """What `mmolre: error:` says: our own errors carry their path and advice; the rest get both added here."""
    if isinstance(e, _our_errors()):
        return str(e)
    if isinstance(e, OSError) and e.errno in _OUT_OF_SPACE:
        name = e.filename or (f"a file under {where}" if where else "a file")
        return (f"{name}: {e.strerror or e} (out of disk space or over a size limit); free space and "
                "rerun the same command: a store build is resumable and keeps the shards already written")
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}; check the path and its permissions"
    if isinstance(e, MemoryError):
        return "out of memory; use smaller inputs or batches (--units-per-shard, --batch-videos, --workers)"
    if isinstance(e, ValueError):
        return str(e)
    return f"unexpected {type(e).__name__}: {e}; rerun with --debug for the traceback and report it"


def _quiet_libraries() -> None:
    """Library warnings (torch's UserWarnings, absl/glog lines from mediapipe's C++, multiprocessing's
    resource_tracker in its own process) never land beside the one-line errors; `--debug` shows them."""
    import warnings

    warnings.simplefilter("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # child processes: workers, the resource tracker
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Native libraries (mediapipe's absl and TensorFlow Lite lines, glog) write to file descriptor 2 directly:
    while a command runs in its own process, descriptor 2 is /dev/null (inherited by worker processes and the
    resource tracker) and Python's `sys.stderr`, which carries every line of ours, is a copy of the real one."""
    if sys.stderr is not sys.__stderr__ or sys.stderr is None:  # embedded (a test's captured stderr): leave it
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    before = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, errors="backslashreplace")
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = before
        os.dup2(saved, 2)
        os.close(saved)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with contextlib.ExitStack() as quiet:
        if not args.debug and sys.stderr is sys.__stderr__:  # a command in its own process, not embedded
            _quiet_libraries()
            quiet.enter_context(_native_stderr_silenced())
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if not getattr(args, "quiet", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("distributed", "httpx", "numexpr", "matplotlib", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_scrub_record)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("mmolre: interrupted; rerun the same command to continue where it stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - every error becomes one line; --debug shows the traceback
        if args.debug:
            raise
        print(f"mmolre: error: {_escape(scrub(error_message(e, getattr(args, 'out', None))))}", file=sys.stderr)
        return EXIT_USAGE if isinstance(e, UsageError) else EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
