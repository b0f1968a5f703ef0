"""The FusedEO Processing provider (id ``fusedeo``)."""

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .. import __version__
from .algorithms import algorithm_classes

ICON_PATH = Path(__file__).resolve().parent.parent / "resources" / "icon.svg"


class FusedEOProvider(QgsProcessingProvider):
    """Provider holding every FusedEO algorithm."""

    def id(self) -> str:  # noqa: A003 (QGIS API)
        """Return the stable provider id used in algorithm ids."""
        return "fusedeo"

    def name(self) -> str:
        """Return the provider name shown in the Toolbox."""
        return "FusedEO"

    def longName(self) -> str:  # noqa: N802 (QGIS API)
        """Return the provider name with its version."""
        return f"FusedEO {__version__}"

    def icon(self) -> QIcon:
        """Return the provider icon."""
        return QIcon(str(ICON_PATH))

    def versionInfo(self) -> str:  # noqa: N802 (QGIS API)
        """Return the plugin version."""
        return __version__

    def loadAlgorithms(self) -> None:  # noqa: N802 (QGIS API)
        """Add one instance of each algorithm."""
        for algorithm_class in algorithm_classes():
            self.addAlgorithm(algorithm_class())
