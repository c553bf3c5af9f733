"""Training in JAX: datasets (TFDS array_record), Flax models, the training loop with Orbax checkpoints, embedding.

``config`` (:class:`TrainConfig`, the settings), ``models``, ``train`` (steps, evaluation, :func:`fit`),
``checkpoint`` (run folders, Orbax managers, digests, verified restore, resume), ``embed``, ``data``.
"""

from .config import TrainConfig

__all__ = ["TrainConfig"]
