"""Parameter counts and CPU training throughput of MMoLRE against the dense MoE at 4, 8 and 16 experts.

For each expert count N the shared experts get N different ranks spread from 8 to 64 (the task-specific expert
rank 32); the dense MoE has the same experts, routers and everything else at full rank (r = d). Parameters are
counted at our default width (d = 128) and at the paper's (d = 768); throughput is measured at d = 128 on a
resident batch of text (384-d, MiniLM) + audio (74-d, COVAREP) segments of 50 words: forward, backward and an
AdamW step, the median of several timed steps after warm-up.

    .venv/bin/python bench/train_throughput.py                 # table, then one JSON line
    .venv/bin/python bench/train_throughput.py --threads 1 --steps 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feature_schemas import EMOTIONS  # noqa: E402
from mmolre.baselines import build_model, count_parameters  # noqa: E402
from mmolre.model import MMoLREConfig, linear_ranks  # noqa: E402
from mmolre.tasks import TaskSpec  # noqa: E402

TASKS = (TaskSpec("sentiment", "regression"), TaskSpec("emotion", "multilabel", EMOTIONS))
INPUTS = {"text": 384, "audio": 74}


def config(n_experts: int, d_model: int) -> MMoLREConfig:
    return MMoLREConfig(input_dims=INPUTS, tasks=TASKS, d_model=d_model, n_heads=4 if d_model < 512 else 8,
                        expert_ranks=linear_ranks(n_experts, 8, 64), task_rank=32, dropout=0.1)


def step_time(model: torch.nn.Module, batch: int, words: int, steps: int, warmup: int) -> float:
    torch.manual_seed(0)
    x = {m: torch.randn(batch, words, d) for m, d in INPUTS.items()}
    mask = {m: torch.ones(batch, words, dtype=torch.bool) for m in INPUTS}
    mask["audio"][:, -5:] = False  # some uncovered words, as real stores have
    y_sent = torch.randn(batch).clamp(-3, 3)
    y_emo = (torch.rand(batch, 6) > 0.7).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        out = model(x, mask)
        loss = (out.outputs["sentiment"][:, 0] - y_sent).abs().mean()
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(out.outputs["emotion"], y_emo) + out.aux_loss  # aux_loss: 3e-4 x the balance loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experts", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--words", type=int, default=50)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for n in args.experts:
        for name in ("mmolre", "dense_moe"):
            paper = count_parameters(build_model(name, config(n, 768)))
            model = build_model(name, config(n, args.d_model))
            params = count_parameters(model)
            t = step_time(model, args.batch, args.words, args.steps, args.warmup)
            rows.append({
                "experts": n, "model": name, "ranks": list(config(n, args.d_model).expert_ranks) if name == "mmolre" else [args.d_model] * n,
                "params_total": params["total"], "params_experts": params["experts"],
                "params_total_d768": paper["total"], "params_experts_d768": paper["experts"],
                "step_time_s": t, "samples_per_s": args.batch / t,
            })
    head = f"{'N':>3} {'model':10} {'params':>11} {'experts':>11} {'params@768':>12} {'experts@768':>12} {'step ms':>9} {'samples/s':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['experts']:>3} {r['model']:10} {r['params_total']:>11,} {r['params_experts']:>11,} {r['params_total_d768']:>12,} "
              f"{r['params_experts_d768']:>12,} {r['step_time_s'] * 1e3:>9.1f} {r['samples_per_s']:>10.1f}")
    summary = {
        "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__, "d_model": args.d_model,
        "batch": args.batch, "words": args.words, "inputs": INPUTS, "rows": rows,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
