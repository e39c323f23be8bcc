"""User-facing errors of the runtime: one line each, naming the input and what was expected."""

from __future__ import annotations

__all__ = ["RuntimeInputError", "EXIT_INTERNAL", "EXIT_BAD_INPUT"]

EXIT_INTERNAL = 1  # an unexpected exception: one line, `--debug` for the traceback
EXIT_BAD_INPUT = 2  # same exit code as `allinone`'s bad-input errors: fix the input and rerun


class RuntimeInputError(ValueError):
    """A bundle, audio file or report is not what was expected; the CLIs print it without a traceback."""

    exit_code = EXIT_BAD_INPUT
