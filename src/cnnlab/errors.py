"""The one error type users see: the CLI prints its message on one line and exits with status 2."""


class CnnlabError(ValueError):
    """A problem with the user's input (a file, an option, a model shape), not a bug in cnnlab."""


class TrainingStopped(CnnlabError):
    """Training met a problem it was told to stop at (a non-finite loss or gradient); the message says which."""
