"""The exceptions pserver raises: one per status code of the C++ library.

Each carries the library's message (``str(e)``) and its code name (``e.code``). They also derive
from the built-in exception a Python program would catch for the same trouble: a bad argument is
a ``ValueError``, a wait that ran out of time a ``TimeoutError``, a peer that is gone a
``ConnectionError``.
"""


class Error(RuntimeError):
    """A pserver call failed; ``code`` names the status code (e.g. ``"Unavailable"``)."""

    code = "Internal"


class InvalidArgumentError(Error, ValueError):
    """The call was given something wrong; nothing was sent."""

    code = "InvalidArgument"


class NotFoundError(Error, LookupError):
    """A named thing (table, node, file) does not exist."""

    code = "NotFound"


class DeadlineExceededError(Error, TimeoutError):
    """A wait ran out of time; the message names what was awaited."""

    code = "DeadlineExceeded"


class UnavailableError(Error, ConnectionError):
    """A peer is gone or cannot be reached."""

    code = "Unavailable"


class CorruptionError(Error):
    """Bytes from the network or a file are malformed."""

    code = "Corruption"


class AbortedError(Error):
    """The job or this node was shut down while the call was pending."""

    code = "Aborted"


BY_CODE = {
    cls.code: cls
    for cls in (Error, InvalidArgumentError, NotFoundError, DeadlineExceededError, UnavailableError,
                CorruptionError, AbortedError)
}
