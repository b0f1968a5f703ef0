"""Raster side of the FusedEO core: bands, season stacks, patch grids, writers.

Importable without QGIS; reads and writes through the system GDAL (osgeo).
"""
