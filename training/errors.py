"""The training package's user-facing error.

Every check of what a user gave training (a config file, dataset folders, a
run to resume, harvests) raises :class:`TrainingInputError`: an
``InputError``, so that ``cmb`` prints it as one line and exits with the input
error's code, and a ``ValueError``, which is what these checks raised before
and what library callers catch. Any other ``ValueError`` out of training is a
bug and shows as one (the commands no longer relabel every ``ValueError``).
"""

from model.errors import InputError


class TrainingInputError(InputError, ValueError):
    """A config, dataset, checkpoint or harvest that training cannot use, and why."""


__all__ = ["TrainingInputError"]
