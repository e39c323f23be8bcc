"""User-facing errors. Each carries a one-line message and the CLI exit code it maps to."""

from __future__ import annotations

__all__ = ["AllinoneError", "BadInputError", "NoFitError", "VerificationError",
           "EXIT_OK", "EXIT_INTERNAL", "EXIT_BAD_INPUT", "EXIT_NO_FIT", "EXIT_VERIFICATION_FAILED"]

EXIT_OK = 0
EXIT_INTERNAL = 1  # an unexpected exception (a bug, or an input no check foresaw): one line, --debug for more
EXIT_BAD_INPUT = 2  # bad file, bad value, unknown name: fix the input and rerun
EXIT_NO_FIT = 3  # no nested system meets a profile's constraints
EXIT_VERIFICATION_FAILED = 4  # a built .pte disagreed with the eager model, or its numbers were not finite


class AllinoneError(Exception):
    """Base class of errors a user can cause; the CLI prints the message without a traceback."""

    exit_code = EXIT_BAD_INPUT


class BadInputError(AllinoneError, ValueError):
    """An input (file, value, name) is not what was expected."""

    exit_code = EXIT_BAD_INPUT


class NoFitError(AllinoneError):
    """No nested system meets the constraints of a device profile."""

    exit_code = EXIT_NO_FIT


class VerificationError(AllinoneError):
    """An exported program does not reproduce the eager model's output."""

    exit_code = EXIT_VERIFICATION_FAILED
