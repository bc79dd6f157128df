"""The errors rrm raises for input it cannot use (see ``docs/error-policy.md``).

A wrong type is a ``TypeError`` and a wrong value a ``ValueError``, as in Python itself.
A value that comes from outside the program (a command-line option, a config file, a
dataset or checkpoint file) and cannot be used raises :class:`InputError`, a ``ValueError``,
or one of its kinds below; the message names the option, file or key and says what was
expected. The command lines report an ``InputError`` (and an ``OSError``, such as a file
that cannot be written) as one ``error:`` line with exit status 2; any other exception is
a bug and keeps its traceback.
"""


class InputError(ValueError):
    """An option value or input file that cannot be used; the message says which and why."""


class ConfigError(InputError):
    """A training configuration value or file is invalid."""


class DatasetError(InputError):
    """A dataset folder, list or file is missing, unreadable or inconsistent."""


class CheckpointError(InputError):
    """A checkpoint or weights file is unreadable, of the wrong kind or does not fit the network."""
