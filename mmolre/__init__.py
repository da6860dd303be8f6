"""MMoLRE: multi-task mixture of low-rank experts for sentiment and emotion, trained on a feature store.

Depends on feature_schemas only (never on pipelines), so a trained model needs nothing of the extraction stack.
"""

from .baselines import DenseMoE, HardSharing, build_model, count_parameters
from .config import TrainConfig
from .data import StoreDataset, collate, feature_stats, make_loader
from .errors import RunError
from .inference import evaluate, load_run, predict_segment
from .metrics import classification_metrics, emotion_presence_metrics, sentiment_regression_metrics
from .model import LowRankExpert, MMoLRE, MMoLREConfig, TaskAdaptiveFusion, TaskRouter, UniTSEBlock
from .models import ModelOutput, assemble_model, models, register_model
from .tasks import TaskSpec, infer_tasks
from .train import train

__all__ = [
    "DenseMoE", "HardSharing", "LowRankExpert", "MMoLRE", "MMoLREConfig", "ModelOutput", "RunError", "StoreDataset",
    "TaskAdaptiveFusion", "TaskRouter", "TaskSpec", "TrainConfig", "UniTSEBlock", "build_model", "classification_metrics",
    "collate", "count_parameters", "emotion_presence_metrics", "evaluate", "feature_stats", "infer_tasks", "load_run",
    "assemble_model", "make_loader", "models", "predict_segment", "register_model", "sentiment_regression_metrics", "train",
]
