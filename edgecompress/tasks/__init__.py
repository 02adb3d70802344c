"""The user's side: data, the fine-tuning loop with distillation, the task's metrics."""

from edgecompress.tasks.classification import ClassificationTask, FinetuneSettings

__all__ = ["ClassificationTask", "FinetuneSettings"]
