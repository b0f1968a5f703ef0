"""Read WorldCereal fixture patches into the canonical season stack, for encoder tests.

The fixtures hold S2 L2A (10 bands, B01 and B09 missing, nodata 0) at 10 m
and S1 VV, VH in dB at 20 m. S1 is resampled bilinearly onto the S2 grid so
both sensors cover the same 640 m × 640 m patch; everything absent is NaN.
"""

from pathlib import Path

import numpy as np
from osgeo import gdal

from fusedeo.raster.bands import SEASONS, Sensor, channel_index

gdal.UseExceptions()


def read_season_stack(folder: Path, size_px: int = 64) -> np.ndarray:
    """Return the canonical stack ``(1, 4, 27, size_px, size_px)`` of one location.

    Args:
        folder: A WorldCereal location folder.
        size_px: Side of the patch taken from the top-left corner of the
            64 px S2 grid.
    """
    stack = np.full((1, len(SEASONS), 27, size_px, size_px), np.nan, dtype=np.float32)
    for season_index, season in enumerate(SEASONS):
        s2 = gdal.Open(str(folder / f"s2l2a_{season}.tif"))
        for band_number in range(1, s2.RasterCount + 1):
            band = s2.GetRasterBand(band_number)
            values = band.ReadAsArray()[:size_px, :size_px].astype(np.float32)
            values[values == band.GetNoDataValue()] = np.nan
            stack[0, season_index, channel_index(Sensor.S2L2A, band.GetDescription())] = values

        # Warp S1 (20 m) onto the S2 grid (10 m) of the same extent.
        left, x_res, _, top, _, y_res = s2.GetGeoTransform()
        right, bottom = left + x_res * size_px, top + y_res * size_px
        s1 = gdal.Warp(
            "",
            str(folder / f"s1_{season}.tif"),
            format="MEM",
            outputBounds=(left, bottom, right, top),
            width=size_px,
            height=size_px,
            resampleAlg="bilinear",
        )
        for band_number in range(1, s1.RasterCount + 1):
            band = s1.GetRasterBand(band_number)
            stack[0, season_index, channel_index(Sensor.S1, band.GetDescription())] = band.ReadAsArray()
    return stack


def constant_stack(values: dict[tuple[Sensor, str], float], size_px: int, seasons: int = 4) -> np.ndarray:
    """Return a stack ``(1, seasons, 27, size_px, size_px)`` with constant channels.

    Every season gets the same values; channels not in ``values`` are NaN.
    """
    stack = np.full((1, seasons, 27, size_px, size_px), np.nan, dtype=np.float32)
    for (sensor, band), value in values.items():
        stack[:, :, channel_index(sensor, band)] = value
    return stack
