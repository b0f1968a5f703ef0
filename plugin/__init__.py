"""QGIS layer of FusedEO: plugin class, Processing provider and algorithms."""
