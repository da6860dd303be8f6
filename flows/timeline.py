"""A per-word timeline of one segment: its words, their times, what the model predicted, how much each word fed
each task, and a few interpretable features per word; as data and as a PNG for reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from feature_schemas import Store, coverage_column

# Interpretable dimensions to draw when a store has them (feature set prefix -> dimension names).
SHOWN_DIMS = {
    "egemaps": ("Loudness_sma3", "F0semitoneFrom27.5Hz_sma3nz"),
    "compare": ("pcm_RMSenergy_sma", "F0final_sma"),
    "face": ("mouth_open", "lip_corner_raise", "eye_open_l"),
}


# Facial-expression probabilities (the mediapipe face set's expr_*; fer_* in stores written before its rel_*
# dimensions) are shown per word when present.
EXPRESSION_PREFIXES = ("expr_", "fer_")


def word_expression(seg: dict[str, Any], feature_sets: dict[str, Any], i: int) -> dict[str, Any] | None:
    """The face expression over word `i`: the first face set with expression probabilities (expr_* or fer_*) that covers
    the word, as {"set", "top", "p", "probs"}; None when no such set covers it (no face, or no such set)."""
    for name, fs in feature_sets.items():
        prefix = next((p for p in EXPRESSION_PREFIXES if any(d.startswith(p) for d in fs.dims)), "")
        cols = [j for j, d in enumerate(fs.dims) if prefix and d.startswith(prefix)]
        if (not cols or getattr(fs, "level", "word") != "word" or name not in seg  # summaries hold no word rows
                or float(seg[coverage_column(name)][i]) <= 0):
            continue
        probs = {fs.dims[j][len(prefix):]: float(seg[name][i, j]) for j in cols}
        if not all(np.isfinite(v) for v in probs.values()):
            continue
        top = max(probs, key=probs.__getitem__)
        return {"set": name, "top": top, "p": probs[top], "probs": probs}
    return None


def timeline(seg: dict[str, Any], prediction: dict[str, Any], feature_sets: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows per word: word, start, end, per-task contribution, the shown feature values and the face expression
    (`face_expression`, see word_expression)."""
    rows = []
    for i, word in enumerate(seg.get("words") or []):
        row: dict[str, Any] = {
            "word": word,
            "start": float(seg["word_start"][i]) if np.isfinite(seg["word_start"][i]) else None,
            "end": float(seg["word_end"][i]) if np.isfinite(seg["word_end"][i]) else None,
            "weights": {t: float(v["word_contribution"][i]) for t, v in prediction.get("tasks", {}).items()},
            "features": {},
        }
        for name, fs in feature_sets.items():
            if name not in seg or getattr(fs, "level", "word") != "word":  # utterance-level sets have no per-word value
                continue
            covered = float(seg[coverage_column(name)][i]) > 0
            for prefix, dims in SHOWN_DIMS.items():
                if name.startswith(prefix):
                    for d in dims:
                        if d in fs.dims:
                            row["features"][f"{name}.{d}"] = float(seg[name][i, fs.dims.index(d)]) if covered else None
        row["face_expression"] = word_expression(seg, feature_sets, i)
        rows.append(row)
    return rows


def plot_timeline(rows: list[dict[str, Any]], path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    words = [r["word"] for r in rows]
    x = np.arange(len(rows))
    tasks = sorted({t for r in rows for t in r["weights"]})
    feats = sorted({f for r in rows for f in r["features"]})
    fig, axes = plt.subplots(1 + len(feats), 1, figsize=(max(6, 0.45 * len(rows) + 2), 2.0 + 1.3 * len(feats)), sharex=True,
                             squeeze=False)
    ax = axes[0, 0]
    width = 0.8 / max(1, len(tasks))
    for k, t in enumerate(tasks):
        ax.bar(x + k * width - 0.4 + width / 2, [r["weights"].get(t, 0) for r in rows], width, label=t)
    ax.set_ylabel("word weight")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    for j, f in enumerate(feats, start=1):
        a = axes[j, 0]
        vals = [np.nan if r["features"].get(f) is None else r["features"][f] for r in rows]
        a.plot(x, vals, marker="o")
        a.set_ylabel(f.split(".", 1)[1][:18], fontsize=8)
    # each word's top face expression beside it: "smile (happy .97)"
    labels = [w if not r.get("face_expression") else
              f"{w} ({r['face_expression']['top']} {r['face_expression']['p']:.2f})" for w, r in zip(words, rows, strict=True)]
    axes[-1, 0].set_xticks(x)
    axes[-1, 0].set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def explain_segment(store: str | Path, run: str | Path, segment_id: str, png: str | Path | None = None) -> dict[str, Any]:
    """Predict one stored segment with a run and lay out its word timeline (optionally drawn to `png`)."""
    from mmolre.inference import load_run, predict_segment

    loaded = load_run(run)
    seg = Store(store).segment(segment_id)
    feats = {m: seg[m] for m in loaded[2]["feature_sets"] if m in seg}
    feats |= {coverage_column(m): seg[coverage_column(m)] for m in loaded[2]["feature_sets"] if coverage_column(m) in seg}
    feats |= {f"{m}__present": seg[f"{m}__present"] for m in loaded[2]["feature_sets"] if f"{m}__present" in seg}
    if "words" in seg:  # a run with a fine-tuned text encoder reads the words as written
        feats["words"] = seg.get("words_written") or seg["words"]
    prediction = predict_segment(loaded, feats)
    rows = timeline(seg, prediction, Store(store).feature_sets)
    out = {
        "segment_id": segment_id,
        "transcript": seg.get("transcript"),
        "truth": {"sentiment": seg.get("sentiment")},
        "sentiment": prediction.get("sentiment"),
        "emotions": prediction.get("emotions"),
        "modality_weights": {t: v["modality_weights"] for t, v in prediction["tasks"].items()},
        "timeline": rows,
    }
    if png is not None:
        label = out["sentiment"] if isinstance(out["sentiment"], str) else f"{out['sentiment']:+.2f}"
        out["plot"] = str(plot_timeline(rows, png, f"{segment_id}: predicted sentiment {label}"))
    return out
