"""A Processing feedback that keeps its messages and can cancel itself mid-run."""

from qgis.core import QgsProcessingFeedback


class RecordingFeedback(QgsProcessingFeedback):
    """Feedback that records pushed messages, and cancels once progress passes a threshold."""

    def __init__(self, cancel_after_percent: float | None = None) -> None:
        super().__init__()
        self.infos: list[str] = []
        self.warnings: list[str] = []
        self.cancel_after_percent = cancel_after_percent

    def pushInfo(self, info: str) -> None:  # noqa: N802 (QGIS API)
        self.infos.append(info)
        super().pushInfo(info)

    def pushWarning(self, warning: str) -> None:  # noqa: N802 (QGIS API)
        self.warnings.append(warning)
        super().pushWarning(warning)

    def setProgress(self, progress: float) -> None:  # noqa: N802 (QGIS API)
        super().setProgress(progress)
        if self.cancel_after_percent is not None and progress > self.cancel_after_percent:
            self.cancel()
