"""Progress, messages and cancellation for the QGIS-free core.

Core functions take a :class:`Reporter` instead of a ``QgsProcessingFeedback``
so that they run the same from QGIS, a command line or a test. The Processing
layer passes an adapter that forwards to the feedback object.
"""

import logging
from typing import Protocol

logger = logging.getLogger(__name__)


class Reporter(Protocol):
    """Channel for a long run's messages, progress and cancellation."""

    def info(self, message: str) -> None:
        """Report something the user needs to trust the result."""

    def warning(self, message: str) -> None:
        """Report a degraded path or a decision that changes results."""

    def debug(self, message: str) -> None:
        """Report timings and other detail."""

    def progress(self, percent: float) -> None:
        """Set the progress of the whole run, from 0 to 100."""

    def is_canceled(self) -> bool:
        """Return whether the user asked to stop the run."""


class LoggingReporter:
    """Reporter that writes to the standard ``logging`` module and never cancels."""

    def __init__(self, name: str = "fusedeo") -> None:
        """Create a reporter that logs through ``logging.getLogger(name)``."""
        self._logger = logging.getLogger(name)
        self.messages: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        """Log at INFO level and keep the message."""
        self.messages.append(("info", message))
        self._logger.info(message)

    def warning(self, message: str) -> None:
        """Log at WARNING level and keep the message."""
        self.messages.append(("warning", message))
        self._logger.warning(message)

    def debug(self, message: str) -> None:
        """Log at DEBUG level."""
        self._logger.debug(message)

    def progress(self, percent: float) -> None:
        """Ignore progress (nothing to show it on)."""

    def is_canceled(self) -> bool:
        """Return False: a logging reporter cannot be cancelled."""
        return False
