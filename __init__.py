"""FusedEO: seasonal Sentinel-1/2 foundation-model embeddings for QGIS.

This file is the QGIS entry point. It imports nothing from QGIS at module
level, so that the QGIS-free core (``models``, ``raster``, ``neuco``) can be
imported and tested without a QGIS installation.
"""

__version__ = "0.1.0"


def classFactory(iface):  # noqa: N802, ANN001, ANN201 (name and signature fixed by QGIS)
    """Create the plugin object that QGIS loads.

    Args:
        iface: The QGIS interface (``QgisInterface``).

    Returns:
        The FusedEO plugin instance.
    """
    from .plugin.plugin import FusedEOPlugin

    return FusedEOPlugin(iface)
