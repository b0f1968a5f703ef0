"""The QGIS plugin object: registers the FusedEO Processing provider."""

from qgis.core import QgsApplication

from .provider import FusedEOProvider


class FusedEOPlugin:
    """Plugin that adds the FusedEO provider to the Processing framework."""

    def __init__(self, iface) -> None:  # noqa: ANN001 (QgisInterface)
        """Keep the QGIS interface; the provider is created in initProcessing."""
        self.iface = iface
        self.provider: FusedEOProvider | None = None

    def initProcessing(self) -> None:  # noqa: N802 (QGIS API)
        """Register the provider (called by QGIS, also by qgis_process).

        If a provider with the id ``fusedeo`` is already registered (for
        example by a second call), the registry rejects and deletes the new
        one, so it is not kept.
        """
        provider = FusedEOProvider()
        if QgsApplication.processingRegistry().addProvider(provider):
            self.provider = provider

    def initGui(self) -> None:  # noqa: N802 (QGIS API)
        """Set up the plugin in the desktop application."""
        self.initProcessing()

    def unload(self) -> None:
        """Remove the provider when the plugin is unloaded."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
