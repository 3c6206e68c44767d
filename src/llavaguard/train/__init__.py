"""Fine-tuning safeguards: ``TrainConfig`` in, a model folder out (``llavaguard train``)."""

from llavaguard.train.config import TrainConfig

__all__ = ["TrainConfig", "train"]


def train(cfg: TrainConfig | None = None, **kw):
    """Run one training (see ``llavaguard.train.run.train``)."""
    from llavaguard.train.run import train as _train

    return _train(cfg or TrainConfig(**kw))
