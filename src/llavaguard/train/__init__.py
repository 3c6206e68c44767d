"""Fine-tuning safeguards: ``TrainConfig`` in, a model folder out (``llavaguard train``)."""

from typing import Any

from llavaguard.train.config import TrainConfig

__all__ = ["TrainConfig", "train"]


def train(cfg: TrainConfig | None = None, **kw: Any) -> dict[str, Any]:
    """Run one training (see ``llavaguard.train.run.train``)."""
    from llavaguard.train.run import train as _train

    return _train(cfg or TrainConfig(**kw))
