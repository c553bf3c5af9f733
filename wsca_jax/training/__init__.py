"""Training in JAX: datasets (TFDS array_record), Flax models, the training loop with Orbax checkpoints, embedding."""
