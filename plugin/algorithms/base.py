"""Shared behaviour of FusedEO algorithms: identity, help text, errors.

Each algorithm declares its help as data (``SUMMARY`` and ``PARAMETER_HELP``);
this base class renders it into ``shortHelpString`` and provides the labels
used in ``initAlgorithm``. Core errors become ``QgsProcessingException``.
"""

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from html import escape
from pathlib import Path
from typing import Any, TypeVar

from qgis.core import (
    QgsMapLayer,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProviderRegistry,
)
from qgis.PyQt.QtCore import QCoreApplication

from ...errors import PluginError, RunCancelledError

T = TypeVar("T")


class FusedEOAlgorithm(QgsProcessingAlgorithm):
    """Base class of every FusedEO algorithm."""

    ALGORITHM_ID = ""
    DISPLAY_NAME = ""
    GROUP = ""
    GROUP_ID = ""
    SUMMARY = ""
    # Parameter name -> (label, help text).
    PARAMETER_HELP: dict[str, tuple[str, str]] = {}

    def name(self) -> str:
        """Return the stable algorithm id (without the provider prefix)."""
        return self.ALGORITHM_ID

    def displayName(self) -> str:  # noqa: N802 (QGIS API)
        """Return the translated display name."""
        return self.tr(self.DISPLAY_NAME)

    def group(self) -> str:
        """Return the translated group name."""
        return self.tr(self.GROUP)

    def groupId(self) -> str:  # noqa: N802 (QGIS API)
        """Return the stable group id."""
        return self.GROUP_ID

    def shortHelpString(self) -> str:  # noqa: N802 (QGIS API)
        """Render the summary and the help of every parameter as HTML.

        The texts are escaped, so placeholders such as ``<task>`` show as written.
        """
        parts = [f"<p>{escape(self.tr(self.SUMMARY), quote=False)}</p>", "<dl>"]
        for label, text in self.PARAMETER_HELP.values():
            label_html, text_html = escape(self.tr(label), quote=False), escape(self.tr(text), quote=False)
            parts.append(f"<dt><b>{label_html}</b></dt><dd>{text_html}</dd>")
        parts.append("</dl>")
        return "\n".join(parts)

    def createInstance(self) -> "FusedEOAlgorithm":  # noqa: N802 (QGIS API)
        """Return a new instance of the same algorithm."""
        return type(self)()

    def tr(self, text: str) -> str:
        """Translate ``text`` in the context of this algorithm class."""
        return QCoreApplication.translate(type(self).__name__, text)

    def label(self, name: str) -> str:
        """Return the translated label of parameter ``name``."""
        return self.tr(self.PARAMETER_HELP[name][0])

    @contextlib.contextmanager
    def interrupt_cancels(self, feedback: QgsProcessingFeedback) -> Iterator[None]:
        """Turn Ctrl-C (SIGINT) into a cancel request of ``feedback`` while the block runs.

        qgis_process runs an algorithm on its main thread and otherwise lets it
        finish and write its outputs after Ctrl-C. The core checks the cancel
        request as in QGIS and removes partial outputs. On any other thread
        (the QGIS desktop runs algorithms in a background task) nothing changes.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, lambda signal_number, frame: feedback.cancel())
        try:
            yield
        finally:
            # A handler installed outside Python reads as None and cannot be put back; Python's default replaces it.
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)

    def run_core(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call a core function, turning FusedEO errors into Processing errors.

        A cancellation passes through unchanged, because it is an outcome the
        algorithm reports, not a failure.
        """
        try:
            return function(*args, **kwargs)
        except RunCancelledError:
            raise
        except PluginError as err:
            raise QgsProcessingException(str(err)) from err


def layer_file_path(layer: QgsMapLayer, parameter_name: str) -> str:
    """Return the file path behind a GDAL or OGR layer.

    Args:
        layer: A raster or vector layer.
        parameter_name: The parameter the layer came from, for messages.

    Returns:
        The dataset path that GDAL/OGR can open.

    Raises:
        QgsProcessingException: If the layer is not file- or GDAL-backed.
    """
    provider = layer.providerType()
    if provider not in ("gdal", "ogr"):
        raise QgsProcessingException(
            f"{parameter_name}: layer '{layer.name()}' uses the '{provider}' data provider; "
            "FusedEO reads layers through GDAL/OGR. Save the layer to a GeoTIFF or "
            "GeoPackage first (Export > Save As…)."
        )
    parts = QgsProviderRegistry.instance().decodeUri(provider, layer.source())
    path = parts.get("path") or layer.source()
    if not path:
        raise QgsProcessingException(
            f"{parameter_name}: layer '{layer.name()}' has no data source path."
        )
    if provider == "ogr" and parts.get("layerName"):
        return f"{path}|layername={parts['layerName']}"
    return str(Path(path)) if Path(path).exists() else path
