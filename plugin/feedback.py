"""Adapter from the core's Reporter protocol to ``QgsProcessingFeedback``."""

from qgis.core import QgsProcessingFeedback


class FeedbackReporter:
    """Forward core messages, progress and cancellation to Processing feedback."""

    def __init__(self, feedback: QgsProcessingFeedback | None) -> None:
        """Wrap ``feedback``; a None feedback (allowed by Processing) gets a silent one."""
        self.feedback = feedback if feedback is not None else QgsProcessingFeedback()

    def info(self, message: str) -> None:
        """Send ``message`` with pushInfo."""
        self.feedback.pushInfo(message)

    def warning(self, message: str) -> None:
        """Send ``message`` with pushWarning."""
        self.feedback.pushWarning(message)

    def debug(self, message: str) -> None:
        """Send ``message`` with pushDebugInfo."""
        self.feedback.pushDebugInfo(message)

    def progress(self, percent: float) -> None:
        """Set the progress bar, clamped to 0..100."""
        self.feedback.setProgress(min(100.0, max(0.0, percent)))

    def is_canceled(self) -> bool:
        """Pass the feedback's cancel state through."""
        return self.feedback.isCanceled()
