"""Exit codes users can script on, and the one error type shown to users without a traceback."""
from __future__ import annotations

EXIT_PASSED = 0
EXIT_THRESHOLD_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INVALID_RUN = 3
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A problem the user can fix; carries every message at once and the exit code to leave with."""

    def __init__(self, messages: str | list[str], exit_code: int = EXIT_BAD_INPUT) -> None:
        self.messages = [messages] if isinstance(messages, str) else list(messages)
        super().__init__("; ".join(self.messages))
        self.exit_code = exit_code


class TargetUnusable(UserError):
    """The target could not be started or reached."""

    def __init__(self, messages: str | list[str]) -> None:
        super().__init__(messages, EXIT_INVALID_RUN)
