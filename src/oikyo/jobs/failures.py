"""Readable reasons for failed runs.

The recipe raises ``TrainingError`` (an :class:`oikyo.errors.OikyoError`) with a message meant for
the user for the failures it knows (out of memory, a sequence longer than the context, an empty
dataset ...). Anything else that escapes it is turned into one readable line here, so
``oikyo runs show`` says what went wrong; the full traceback goes to the run's ``train.log``.
"""

from __future__ import annotations

from oikyo.errors import OikyoError

OOM_HINT = ("lower the batch size or the maximum sequence length, turn on gradient checkpointing, "
            "or use a smaller model")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:500] if text else error.__class__.__name__


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, MemoryError) or error.__class__.__name__ == "OutOfMemoryError":
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def describe(error: BaseException) -> str:
    """One readable paragraph for a run that failed with ``error``."""
    if isinstance(error, OikyoError):
        return str(error).strip() or error.__class__.__name__
    if is_out_of_memory(error):
        return f"out of memory: {_first_line(error)}; {OOM_HINT}"
    from oikyo.store import disk

    full = disk.describe(error, "the checkpoints written before are kept")
    if full is not None:
        return full
    if isinstance(error, IndexError) and "index out of range" in str(error):
        return ("an index went past the end of a table in the model: usually a sequence longer than the "
                f"model's context or a token id outside its vocabulary ({_first_line(error)})")
    if isinstance(error, FileNotFoundError):
        return f"missing file: {error.filename or _first_line(error)}"
    return f"unexpected error ({error.__class__.__name__}): {_first_line(error)}; the traceback is in train.log"


def is_user_error(error: BaseException) -> bool:
    """Whether the reason alone explains the failure (no traceback needed in the log)."""
    from oikyo.store import disk

    return isinstance(error, OikyoError) or is_out_of_memory(error) or disk.reason_of(error) is not None
