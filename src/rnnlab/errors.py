"""The project's own error type.

Every check on user input raises :class:`RnnlabError`. It subclasses ``ValueError`` so code
written for Keras or torch that catches ``ValueError`` keeps working, and it lets tests tell a
clear, intended error from an internal crash.
"""


class RnnlabError(ValueError):
    """Bad input: the message names what was expected and what was received."""


def expect(condition: bool, message: str) -> None:
    """Raise :class:`RnnlabError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise RnnlabError(message)
