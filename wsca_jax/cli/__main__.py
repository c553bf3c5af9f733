"""``python -m wsca_jax.cli``: the ``wsca`` command."""

from . import entry

entry()
