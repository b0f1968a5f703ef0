"""Prediction rasters: block-wise writing on an embedding grid, and their QML style.

A prediction raster has the grid of the embedding raster it was made from:
same CRS, geotransform and size. It has one float32 band in label units (the
probability of class 1 for a classification probe), with NaN as nodata where
the embeddings are nodata. It is written under a temporary name in the output
folder and renamed on success, so a failed or cancelled run leaves no file.
"""

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from string import Template

import numpy as np

from ..errors import InputError, RunCancelledError
from ..reporting import Reporter
from .embedding_raster import EmbeddingRaster, iter_embedding_blocks, valid_patch_mask

logger = logging.getLogger(__name__)

STYLE_TEMPLATE = (
    Path(__file__).resolve().parent.parent / "resources" / "styles" / "probe_prediction.qml"
)

# Viridis at five stops (matplotlib's colour map): readable in grey and by
# readers with colour-vision deficiencies.
RAMP_COLORS: tuple[tuple[int, int, int], ...] = (
    (68, 1, 84),
    (59, 82, 139),
    (33, 145, 140),
    (94, 201, 98),
    (253, 231, 37),
)

GEOTIFF_SUFFIXES = (".tif", ".tiff")
NODATA_PATCHES_KEY = "FUSEDEO_NODATA_PATCHES"
"""Metadata key of the number of patches left nodata because their embedding is nodata."""


def check_geotiff_path(path: str, parameter_name: str) -> None:
    """Reject an output path whose extension is not a GeoTIFF one.

    Raises:
        InputError: If the suffix is not ``.tif`` or ``.tiff``.
    """
    if Path(path).suffix.lower() not in GEOTIFF_SUFFIXES:
        raise InputError(
            f"{parameter_name}: '{path}' does not end in .tif or .tiff; FusedEO writes "
            "GeoTIFF only. Give a .tif path."
        )


def write_prediction_raster(
    embedding: EmbeddingRaster,
    predict: Callable[[np.ndarray], np.ndarray],
    output_path: str,
    band_description: str,
    metadata: dict[str, str],
    reporter: Reporter,
    block_rows: int = 64,
) -> int:
    """Predict every valid patch of ``embedding`` block by block and write a GeoTIFF.

    Args:
        embedding: The embedding raster to read.
        predict: Maps ``(N, D)`` float32 embeddings to ``(N,)`` predictions.
        output_path: Destination ``.tif``; replaced if it exists.
        band_description: Description of the single band.
        metadata: Default-domain GDAL metadata to record.
        reporter: Receives progress; its cancel state is checked per block.
        block_rows: Patch rows read and written per block.

    Returns:
        Number of patches predicted (valid embeddings).

    Raises:
        RunCancelledError: If the reporter is cancelled; no file is left behind.
    """
    from osgeo import gdal

    gdal.UseExceptions()
    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.stem}.{uuid.uuid4().hex[:8]}.partial.tif")
    dataset = gdal.GetDriverByName("GTiff").Create(
        str(temporary),
        embedding.cols,
        embedding.rows,
        1,
        gdal.GDT_Float32,
        options=["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=3", "BIGTIFF=IF_SAFER"],
    )
    predicted = 0
    try:
        dataset.SetGeoTransform(embedding.geotransform)
        dataset.SetProjection(embedding.crs_wkt)
        band = dataset.GetRasterBand(1)
        band.SetNoDataValue(float("nan"))
        band.SetDescription(band_description)
        dataset.SetMetadata(metadata)
        for row_offset, values in iter_embedding_blocks(embedding, block_rows):
            if reporter.is_canceled():
                raise RunCancelledError("Applying the probe was cancelled; no output was written.")
            valid = valid_patch_mask(values)
            block = np.full(valid.shape, np.nan, dtype=np.float32)
            if valid.any():
                block[valid] = predict(values[valid])
            band.WriteArray(block, 0, row_offset)
            predicted += int(valid.sum())
            reporter.progress(100.0 * (row_offset + valid.shape[0]) / max(embedding.rows, 1))
        dataset.SetMetadataItem(
            NODATA_PATCHES_KEY, str(embedding.rows * embedding.cols - predicted)
        )
        band.FlushCache()
        dataset = None
        os.replace(temporary, output)
    except BaseException:
        dataset = None
        temporary.unlink(missing_ok=True)
        raise
    return predicted


def style_path_for(output_path: str) -> Path:
    """Return the sidecar QML path that QGIS loads with ``output_path`` (same stem, ``.qml``)."""
    return Path(output_path).with_suffix(".qml")


def render_prediction_style(minimum: float, maximum: float) -> str:
    """Render the pseudocolour QML template for the value range ``[minimum, maximum]``.

    A degenerate range (``minimum == maximum``) is widened to one unit
    around the value, so that the ramp stays valid.
    """
    if not maximum > minimum:
        minimum, maximum = minimum - 0.5, maximum + 0.5
    positions = np.linspace(0.0, 1.0, len(RAMP_COLORS))
    items = []
    for position, (red, green, blue) in zip(positions, RAMP_COLORS, strict=True):
        value = minimum + position * (maximum - minimum)
        items.append(
            f'          <item alpha="255" value="{value:.10g}" label="{value:.4g}" '
            f'color="#{red:02x}{green:02x}{blue:02x}"/>'
        )
    stops = ":".join(
        f"{position:g};{red},{green},{blue},255"
        for position, (red, green, blue) in zip(positions[1:-1], RAMP_COLORS[1:-1], strict=True)
    )
    template = Template(STYLE_TEMPLATE.read_text(encoding="utf-8"))
    return template.substitute(
        minimum=f"{minimum:.10g}",
        maximum=f"{maximum:.10g}",
        first_color="{},{},{},255".format(*RAMP_COLORS[0]),
        last_color="{},{},{},255".format(*RAMP_COLORS[-1]),
        ramp_stops=stops,
        items="\n".join(items),
    )


def write_prediction_style(output_path: str, minimum: float, maximum: float) -> Path:
    """Write the sidecar QML style of a prediction raster and return its path."""
    path = style_path_for(output_path)
    path.write_text(render_prediction_style(minimum, maximum), encoding="utf-8")
    return path
