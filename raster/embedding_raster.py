"""Embedding rasters: the metadata contract and a reader.

An embedding raster is a float32 GeoTIFF in a projected CRS with one band per
embedding dimension (descriptions ``embedding_0000``, ``embedding_0001`` …)
and one pixel per patch. Output pixel ``(row, col)`` covers the stride cell of
the target grid that starts at grid pixel ``(row * stride, col * stride)``.
The patch behind it is the ``patch_size`` × ``patch_size`` window of grid
pixels with the same top-left corner. Nodata is NaN, and a skipped patch has
NaN in every band.

``fusedeo:embed`` writes the metadata keys defined here in the default GDAL
metadata domain; the probe algorithms read them through
:func:`open_embedding_raster`.
"""

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import GridError, InputError, MissingFileError

logger = logging.getLogger(__name__)

KIND_KEY = "FUSEDEO_KIND"
VERSION_KEY = "FUSEDEO_VERSION"
FINGERPRINT_KEY = "FUSEDEO_EMBEDDING_FINGERPRINT"
PATCH_SIZE_KEY = "FUSEDEO_PATCH_SIZE_PX"
STRIDE_KEY = "FUSEDEO_STRIDE_PX"
GRID_PIXEL_SIZE_KEY = "FUSEDEO_GRID_PIXEL_SIZE"
PROVENANCE_KEY = "FUSEDEO_PROVENANCE"

EMBEDDING_KIND = "embedding"
"""Value of :data:`KIND_KEY` on an embedding raster."""

BAND_DESCRIPTION_FORMAT = "embedding_{:04d}"
"""Band description of 0-based embedding dimension ``i``."""

REQUIRED_KEYS: tuple[str, ...] = (
    KIND_KEY,
    FINGERPRINT_KEY,
    PATCH_SIZE_KEY,
    STRIDE_KEY,
    GRID_PIXEL_SIZE_KEY,
)


def band_description(dimension: int) -> str:
    """Return the band description of 0-based embedding ``dimension``."""
    return BAND_DESCRIPTION_FORMAT.format(dimension)


@dataclass(frozen=True)
class EmbeddingRaster:
    """Grid and metadata of an embedding raster (no pixel values).

    Attributes:
        path: The dataset path given to GDAL.
        rows: Raster height in output pixels (patch rows).
        cols: Raster width in output pixels (patch columns).
        band_count: Number of bands, the embedding width.
        crs_wkt: The projected CRS as WKT.
        geotransform: GDAL geotransform of the output pixels.
        fingerprint: Hex string identifying the embedding space.
        version: FusedEO version that wrote the raster ("" when absent).
        patch_size_px: Patch size in target-grid pixels.
        stride_px: Stride in target-grid pixels (one output pixel per stride).
        grid_pixel_size: Target-grid pixel size in CRS units.
        provenance: Decoded ``FUSEDEO_PROVENANCE`` JSON ({} when absent).
    """

    path: str
    rows: int
    cols: int
    band_count: int
    crs_wkt: str
    geotransform: tuple[float, float, float, float, float, float]
    fingerprint: str
    version: str
    patch_size_px: int
    stride_px: int
    grid_pixel_size: float
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def grid_geotransform(self) -> tuple[float, float, float, float, float, float]:
        """Geotransform of the target grid that the patches were cut from."""
        x0, _, _, y0, _, _ = self.geotransform
        size = self.grid_pixel_size
        return (x0, size, 0.0, y0, 0.0, -size)

    @property
    def grid_shape_px(self) -> tuple[int, int]:
        """``(rows, cols)`` of target-grid pixels covered by all patches.

        The last patch may reach past the last stride cell when the patch size
        exceeds the stride, so the grid spans
        ``(n - 1) * stride + patch_size`` pixels per axis.
        """
        overhang = self.patch_size_px - self.stride_px
        return (
            self.rows * self.stride_px + max(overhang, 0),
            self.cols * self.stride_px + max(overhang, 0),
        )


def _gdal():  # noqa: ANN202 (returns the osgeo.gdal module)
    from osgeo import gdal

    gdal.UseExceptions()
    return gdal


def _int_metadata(metadata: dict[str, str], key: str, path: str) -> int:
    text = metadata[key]
    try:
        value = int(text)
    except ValueError as err:
        raise InputError(
            f"Embedding raster '{path}': metadata {key}='{text}' is not an integer. "
            "Recompute the embeddings with fusedeo:embed."
        ) from err
    if value <= 0:
        raise InputError(
            f"Embedding raster '{path}': metadata {key}={value} must be positive. "
            "Recompute the embeddings with fusedeo:embed."
        )
    return value


def open_embedding_raster(path: str, parameter_name: str = "EMBEDDINGS") -> EmbeddingRaster:
    """Read the grid and FusedEO metadata of an embedding raster.

    Args:
        path: Path of the GeoTIFF written by ``fusedeo:embed``.
        parameter_name: Parameter the raster came from, used in messages.

    Returns:
        The raster's grid and metadata.

    Raises:
        MissingFileError: If GDAL cannot open ``path``.
        InputError: If the raster is not a FusedEO embedding raster (kind,
            data type or required metadata missing or invalid).
        GridError: If the CRS is missing or geographic, or the raster is rotated.
    """
    gdal = _gdal()
    try:
        dataset = gdal.Open(path)
    except RuntimeError as err:
        raise MissingFileError(
            f"{parameter_name}: cannot open embedding raster '{path}' ({err})."
        ) from err
    metadata = dataset.GetMetadata() or {}
    missing = [key for key in REQUIRED_KEYS if not metadata.get(key)]
    if missing:
        raise InputError(
            f"{parameter_name}: '{path}' is not a FusedEO embedding raster: metadata "
            f"{', '.join(missing)} missing. Use the OUTPUT of fusedeo:embed."
        )
    if metadata[KIND_KEY] != EMBEDDING_KIND:
        raise InputError(
            f"{parameter_name}: '{path}' has {KIND_KEY}='{metadata[KIND_KEY]}', expected "
            f"'{EMBEDDING_KIND}'. Use the OUTPUT of fusedeo:embed."
        )
    band_type = gdal.GetDataTypeName(dataset.GetRasterBand(1).DataType)
    if band_type != "Float32":
        raise InputError(f"{parameter_name}: '{path}' has {band_type} bands, expected Float32.")
    geotransform = tuple(float(value) for value in dataset.GetGeoTransform())
    if geotransform[2] != 0.0 or geotransform[4] != 0.0:
        raise GridError(
            f"{parameter_name}: '{path}' has a rotated geotransform {geotransform}; "
            "FusedEO needs a north-up grid."
        )
    crs_wkt = dataset.GetProjection()
    _check_projected(crs_wkt, path, parameter_name)
    try:
        grid_pixel_size = float(metadata[GRID_PIXEL_SIZE_KEY])
    except ValueError as err:
        raise InputError(
            f"{parameter_name}: '{path}' has {GRID_PIXEL_SIZE_KEY}="
            f"'{metadata[GRID_PIXEL_SIZE_KEY]}', expected a number."
        ) from err
    provenance: dict[str, Any] = {}
    if metadata.get(PROVENANCE_KEY):
        try:
            provenance = json.loads(metadata[PROVENANCE_KEY])
        except json.JSONDecodeError:
            logger.warning("%s: %s of '%s' is not valid JSON", parameter_name, PROVENANCE_KEY, path)
    return EmbeddingRaster(
        path=path,
        rows=dataset.RasterYSize,
        cols=dataset.RasterXSize,
        band_count=dataset.RasterCount,
        crs_wkt=crs_wkt,
        geotransform=geotransform,  # type: ignore[arg-type]
        fingerprint=metadata[FINGERPRINT_KEY],
        version=metadata.get(VERSION_KEY, ""),
        patch_size_px=_int_metadata(metadata, PATCH_SIZE_KEY, path),
        stride_px=_int_metadata(metadata, STRIDE_KEY, path),
        grid_pixel_size=grid_pixel_size,
        provenance=provenance,
    )


def _check_projected(crs_wkt: str, path: str, parameter_name: str) -> None:
    from osgeo import osr

    if not crs_wkt:
        raise GridError(f"{parameter_name}: '{path}' has no CRS; expected a projected CRS.")
    srs = osr.SpatialReference()
    srs.ImportFromWkt(crs_wkt)
    if not srs.IsProjected():
        raise GridError(
            f"{parameter_name}: '{path}' is in the geographic CRS '{srs.GetName()}'; "
            "embedding rasters are in a projected CRS."
        )


def _read_rows(
    dataset: Any, raster: EmbeddingRaster, row_offset: int, row_count: int
) -> np.ndarray:
    values = dataset.ReadAsArray(0, row_offset, raster.cols, row_count)
    values = np.asarray(values, dtype=np.float32).reshape(raster.band_count, row_count, raster.cols)
    return np.moveaxis(values, 0, -1)


def read_embedding_values(raster: EmbeddingRaster) -> np.ndarray:
    """Read the whole raster as ``(rows, cols, bands)`` float32."""
    return _read_rows(_gdal().Open(raster.path), raster, 0, raster.rows)


def iter_embedding_blocks(
    raster: EmbeddingRaster, block_rows: int = 64
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(row_offset, values)`` for consecutive blocks of patch rows.

    Args:
        raster: The embedding raster.
        block_rows: Patch rows per block; the last block may be shorter.

    Yields:
        The first patch row of the block and its values as
        ``(rows, cols, bands)`` float32.
    """
    dataset = _gdal().Open(raster.path)
    for row_offset in range(0, raster.rows, block_rows):
        row_count = min(block_rows, raster.rows - row_offset)
        yield row_offset, _read_rows(dataset, raster, row_offset, row_count)


def valid_patch_mask(values: np.ndarray) -> np.ndarray:
    """Return a ``(rows, cols)`` mask of patches whose every band is finite.

    A skipped patch is NaN in all bands. A patch with any non-finite band is
    treated as nodata too, so that it never reaches a probe.
    """
    return np.all(np.isfinite(values), axis=-1)
