"""Output files written under a temporary name and renamed on success.

A cancelled or failed run must leave no partial output behind, so every
output is first written next to its final path under a hidden temporary name
(same folder, so the final rename is atomic) and moved into place only when
the whole run has succeeded.
"""

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from osgeo import gdal

from ..errors import InputError

gdal.UseExceptions()
logger = logging.getLogger(__name__)


class PendingOutputs:
    """Temporary paths of a run's outputs; commit renames them, discard deletes them."""

    def __init__(self) -> None:
        """Create an empty set of pending outputs."""
        self._pending: list[tuple[Path, Path]] = []

    def add(self, final_path: str | Path) -> Path:
        """Register an output and return the temporary path to write it to.

        Raises:
            InputError: If the output folder does not exist.
        """
        final = Path(final_path)
        if not final.parent.is_dir():
            raise InputError(f"Output folder '{final.parent}' does not exist; create it or choose another path.")
        temporary = final.with_name(f".{final.stem}.{os.getpid()}.partial{final.suffix}")
        self._pending.append((temporary, final))
        return temporary

    def commit(self) -> None:
        """Move every temporary file to its final path (with sidecar .aux.xml files)."""
        for temporary, final in self._pending:
            os.replace(temporary, final)
            auxiliary = Path(f"{temporary}.aux.xml")
            if auxiliary.exists():
                os.replace(auxiliary, Path(f"{final}.aux.xml"))
        self._pending = []

    def discard(self) -> None:
        """Delete every temporary file."""
        for temporary, _ in self._pending:
            for path in (temporary, Path(f"{temporary}.aux.xml")):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
        self._pending = []


def tile_side_px(band_count: int) -> int:
    """Return a GeoTIFF tile side that keeps one tile near 256 KiB of float32."""
    side = int(math.sqrt(65536 / max(band_count, 1)))
    return max(16, min(256, side // 16 * 16))


def create_float_geotiff(path: str | Path, width: int, height: int, band_count: int,
                         geotransform: Sequence[float], crs_wkt: str) -> gdal.Dataset:
    """Create a tiled, DEFLATE-compressed float32 GeoTIFF filled with NaN nodata.

    Many bands are stored pixel-interleaved, so that writing one output row
    touches each tile once.
    """
    side = tile_side_px(band_count)
    options = [
        "TILED=YES", f"BLOCKXSIZE={side}", f"BLOCKYSIZE={side}", "COMPRESS=DEFLATE", "PREDICTOR=3",
        "BIGTIFF=IF_SAFER", f"INTERLEAVE={'PIXEL' if band_count > 1 else 'BAND'}",
    ]
    driver = gdal.GetDriverByName("GTiff")
    dataset = driver.Create(str(path), width, height, band_count, gdal.GDT_Float32, options=options)
    dataset.SetGeoTransform(tuple(geotransform))
    dataset.SetProjection(crs_wkt)
    for index in range(1, band_count + 1):
        dataset.GetRasterBand(index).SetNoDataValue(float("nan"))
    return dataset


def write_rows(dataset: gdal.Dataset, row: int, values: np.ndarray) -> None:
    """Write ``values`` ``(rows, cols, bands)`` starting at raster row ``row``."""
    planes = np.ascontiguousarray(np.moveaxis(values.astype(np.float32, copy=False), -1, 0))
    dataset.WriteRaster(0, row, values.shape[1], values.shape[0], planes.tobytes(),
                        buf_type=gdal.GDT_Float32)
