"""Embedding rasters made from real WorldCereal Sentinel-2 pixels, for the probe tests.

The "embedding" of a patch is the mean and the standard deviation of each
Sentinel-2 band of each season over the patch's valid pixels: a plain but
real description of the patch, written with the embedding-raster contract of
``fusedeo.raster.embedding_raster``. A patch with less than half of its
pixels valid in any season is nodata in every band, as ``fusedeo:embed``
writes skipped patches.
"""

import json
from pathlib import Path

import numpy as np
from osgeo import gdal

from fusedeo.raster import embedding_raster as contract

SEASONS = ("spring", "summer", "autumn", "winter")
# The statistics have no fitted parts, so every location shares one embedding
# space and one fixed fingerprint.
STATISTICS_FINGERPRINT = "5e1f0c3a9b7d2e48"


def patch_statistics(
    location: Path, patch_size_px: int, seasons: tuple[str, ...] = SEASONS
) -> np.ndarray:
    """Return ``(rows, cols, bands)`` per-patch band means and standard deviations.

    Bands are ordered season by season, each season's S2 band means first and
    then their standard deviations. Patches are ``patch_size_px`` wide with a
    stride of the same size, starting at the top-left pixel.
    """
    blocks = []
    valid_all = None
    for season in seasons:
        dataset = gdal.Open(str(location / f"s2l2a_{season}.tif"))
        values = dataset.ReadAsArray().astype(np.float64)  # (bands, rows_px, cols_px)
        nodata = dataset.GetRasterBand(1).GetNoDataValue()
        if nodata is not None:
            values[values == nodata] = np.nan
        bands, rows_px, cols_px = values.shape
        rows, cols = rows_px // patch_size_px, cols_px // patch_size_px
        cut = values[:, : rows * patch_size_px, : cols * patch_size_px]
        windows = cut.reshape(bands, rows, patch_size_px, cols, patch_size_px).transpose(
            1, 3, 0, 2, 4
        )
        windows = windows.reshape(rows, cols, bands, -1)
        valid_fraction = np.isfinite(windows[:, :, 0, :]).mean(axis=-1)
        valid = valid_fraction >= 0.5
        valid_all = valid if valid_all is None else valid_all & valid
        with np.errstate(invalid="ignore"):
            means = np.nanmean(np.where(valid[..., None, None], windows, 0.0), axis=-1)
            stds = np.nanstd(np.where(valid[..., None, None], windows, 0.0), axis=-1)
        blocks.extend([means, stds])
    features = np.concatenate(blocks, axis=-1).astype(np.float32)
    features[~valid_all] = np.nan
    return features


def write_embedding_raster(
    path: Path,
    features: np.ndarray,
    reference: Path,
    patch_size_px: int,
    stride_px: int | None = None,
    fingerprint: str = STATISTICS_FINGERPRINT,
    crs_wkt: str | None = None,
) -> Path:
    """Write ``(rows, cols, bands)`` features as an embedding raster on the grid of ``reference``.

    Args:
        path: Destination GeoTIFF.
        features: Values per patch; NaN marks nodata.
        reference: GeoTIFF whose origin, pixel size and CRS define the target grid.
        patch_size_px: Patch size in reference pixels.
        stride_px: Stride in reference pixels (default: the patch size).
        fingerprint: Embedding-space fingerprint to record.
        crs_wkt: CRS to write instead of the reference's.
    """
    stride_px = stride_px or patch_size_px
    source = gdal.Open(str(reference))
    x0, pixel_width, _, y0, _, pixel_height = source.GetGeoTransform()
    rows, cols, bands = features.shape
    dataset = gdal.GetDriverByName("GTiff").Create(str(path), cols, rows, bands, gdal.GDT_Float32)
    dataset.SetGeoTransform((x0, pixel_width * stride_px, 0.0, y0, 0.0, pixel_height * stride_px))
    dataset.SetProjection(crs_wkt or source.GetProjection())
    for index in range(bands):
        band = dataset.GetRasterBand(index + 1)
        band.SetNoDataValue(float("nan"))
        band.SetDescription(contract.band_description(index))
        band.WriteArray(features[:, :, index])
    dataset.SetMetadata(
        {
            contract.KIND_KEY: contract.EMBEDDING_KIND,
            contract.VERSION_KEY: "0.1.0",
            contract.FINGERPRINT_KEY: fingerprint,
            contract.PATCH_SIZE_KEY: str(patch_size_px),
            contract.STRIDE_KEY: str(stride_px),
            contract.GRID_PIXEL_SIZE_KEY: repr(float(pixel_width)),
            contract.PROVENANCE_KEY: json.dumps(
                {
                    "encoder": "per-patch S2 band mean and standard deviation (test helper)",
                    "reference": str(reference),
                }
            ),
        }
    )
    dataset = None
    return path


def statistics_embedding(location: Path, path: Path, patch_size_px: int = 4, **options) -> Path:  # noqa: ANN003
    """Write the per-patch statistics embedding of a WorldCereal location to ``path``."""
    features = patch_statistics(location, patch_size_px)
    return write_embedding_raster(
        path, features, location / "s2l2a_summer.tif", patch_size_px, **options
    )
