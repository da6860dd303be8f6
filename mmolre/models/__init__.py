"""The model zoo: every model the harness trains, each in its own file, found through `contract.models()`."""

from .contract import (
    InputNorm,
    ModelInfo,
    ModelOutput,
    assemble_model,
    count_parameters,
    model_config,
    model_info,
    models,
    register_model,
    set_input_stats,
)

__all__ = [
    "InputNorm",
    "ModelInfo",
    "ModelOutput",
    "assemble_model",
    "count_parameters",
    "model_config",
    "model_info",
    "models",
    "register_model",
    "set_input_stats",
]
