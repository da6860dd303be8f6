"""Prefect flow `train-mmolre`: train MMoLRE or a baseline on a store, evaluate the best checkpoint, publish metrics."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.options import model_settings, text_settings, train_config
from flows.summary import metrics_tables, plots_list


@task(cache_policy=NO_CACHE, task_run_name="train {model}")
def train_task(store: str, out: str, model: str, config: Any) -> dict[str, Any]:
    from mmolre.train import train

    return train(store, out, model=model, config=config)


def metrics_markdown(results: dict[str, Any], out: str) -> str:
    """The training artifact: metrics with their n and intervals, warnings, and where the plots are."""
    store = results.get("store")
    store_path = store.get("path") if isinstance(store, dict) else store
    head = [f"# Run `{out}`", "", f"report: `{out}/report.md`; store: `{store_path}`", ""]
    head += [f"- warning: {w}" for w in results.get("warnings") or []]
    return "\n".join([*head, "", *metrics_tables(results), *plots_list(out, results.get("plots"))])


@flow(name="train-mmolre", log_prints=True)
def train_mmolre(
    store: str,
    out: str,
    model: str = "mmolre",
    task_name: str | None = None,
    config_file: str | None = None,
    overrides: list[str] | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    text_encoder: str | None = None,
    text_model: str | None = None,
    context: bool = False,
) -> dict[str, Any]:
    """Train on `store` into run folder `out`, evaluate the best checkpoint, publish the metrics; CUDA with bf16
    when present, CPU otherwise.

    Args:
        store: The feature store to train on, an absolute path on the machine serving this flow.
        out: The run folder (checkpoints, results.json, report.md), an absolute path on the serving machine; a
            run already there resumes from its last checkpoint.
        model: A registered model (`mmolre models`: mmolre, hard-sharing, dense-moe, ...) or single-task.
        task_name: Train on this task alone (sentiment or emotion); the task of a single-task model.
        config_file: A TrainConfig YAML/JSON file on the serving machine; empty: the defaults.
        overrides: TrainConfig settings as key=value (e.g. epochs=2, batch_size=16, arch.d_model=64), applied last.
        epochs: Training epochs; empty: the configuration's.
        seed: Random seed; empty: the configuration's.
        device: auto, cpu, cuda or cuda:N; empty: the configuration's (auto).
        text_encoder: frozen (the store's word vectors) or finetune (a Hugging Face encoder over the store's words).
        text_model: The encoder finetune trains, a local model folder; empty: the packaged MiniLM.
        context: Let each utterance see the others of its video (utterance-level sets; as `mmolre train --context`).
    """
    config = train_config(config_file, overrides or [], **model_settings(model, task_name), epochs=epochs, seed=seed,
                          device=device, context=True if context else None, **text_settings(text_encoder, text_model))
    name = config.model
    results = train_task(store, out, name, config)
    create_markdown_artifact(metrics_markdown(results, out), key="train-mmolre-metrics", description=f"{name} on {store}")
    get_run_logger().info("run %s: best epoch %s, report %s/report.md", out, results.get("best_epoch"), out)
    keys = ("valid", "test", "best_epoch", "epochs_run", "parameters", "params", "device", "warnings", "plots")
    return {k: results.get(k) for k in keys} | {"run": out}
