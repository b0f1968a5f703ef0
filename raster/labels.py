"""Labels per patch: label rasters and vector layers aggregated onto an embedding grid.

A probe learns one target value per patch (per pixel of the embedding
raster). Labels come in three forms, and each becomes a ``(rows, cols)``
array on the embedding grid with NaN where a patch has no label:

- A continuous label raster: the mean of the labelled pixels of the patch.
- A categorical label raster with class codes: the fraction of the labelled
  pixels of the patch whose code is one of the codes.
- A vector layer with a numeric field. A point labels the stride cell (the
  output pixel) it falls in, and several points in one cell are averaged.
  Polygons are rasterised on the target grid, and a patch takes the
  area-weighted mean of the polygon values that cover it.

Coverage rule for rasters and polygons: a patch gets a label only when at
least :data:`MIN_COVERED_FRACTION` of its target-grid pixels are labelled, so
that a few labelled pixels at a patch corner do not stand for the whole
patch. Label nodata never counts as labelled.
"""

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import GridError, InputError, MissingFileError
from ..reporting import Reporter
from .embedding_raster import EmbeddingRaster

logger = logging.getLogger(__name__)

MIN_COVERED_FRACTION = 0.5
"""Fraction of a patch's grid pixels that must be labelled for the patch to get a label."""

_MAX_EXAMPLE_VALUES = 10


@dataclass
class PatchLabels:
    """Target values per patch on an embedding grid.

    Attributes:
        values: ``(rows, cols)`` float64 target per patch, NaN without a label.
        name: What the values are (field name, band description or class fraction).
        source: The label dataset path.
        is_class_fraction: Whether values are fractions of ``CLASS_VALUES``.
        binary_source: Whether every raw label (pixel or feature value) is 0 or 1.
        non_binary_examples: Up to ten raw values other than 0 and 1.
        decisions: Decisions that changed the labels (reprojection,
            resampling, skipped features), in words, for the report and metadata.
    """

    values: np.ndarray
    name: str
    source: str
    is_class_fraction: bool = False
    binary_source: bool = True
    non_binary_examples: list[float] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)

    @property
    def labelled_count(self) -> int:
        """Number of patches with a label."""
        return int(np.isfinite(self.values).sum())


def parse_class_values(text: str, parameter_name: str = "CLASS_VALUES") -> list[int]:
    """Parse a comma-separated list of integer class codes such as ``"11, 12"``.

    Raises:
        InputError: If an entry is not an integer or the list is empty.
    """
    codes: list[int] = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            codes.append(int(entry))
        except ValueError as err:
            raise InputError(
                f"{parameter_name}: '{entry}' is not an integer class code; expected a "
                "comma-separated list of integer codes such as '11' or '11,12'."
            ) from err
    if not codes:
        raise InputError(
            f"{parameter_name}: '{text}' contains no class code; expected a comma-separated "
            "list of integer codes such as '11' or '11,12'."
        )
    return codes


def _srs_from_wkt(wkt: str):  # noqa: ANN202 (returns osr.SpatialReference)
    from osgeo import osr

    srs = osr.SpatialReference()
    srs.ImportFromWkt(wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def _crs_name(srs) -> str:  # noqa: ANN001
    authority = srs.GetAuthorityName(None)
    code = srs.GetAuthorityCode(None)
    if authority and code:
        return f"{authority}:{code}"
    return srs.GetName() or "unknown CRS"


class _BinaryTracker:
    """Collects whether raw label values are all 0 or 1, with a few counter-examples."""

    def __init__(self) -> None:
        self.binary = True
        self.examples: list[float] = []

    def update(self, values: np.ndarray) -> None:
        finite = values[np.isfinite(values)]
        other = finite[(finite != 0) & (finite != 1)]
        if other.size == 0:
            return
        self.binary = False
        for value in np.unique(other):
            if len(self.examples) >= _MAX_EXAMPLE_VALUES:
                break
            if float(value) not in self.examples:
                self.examples.append(float(value))


def aggregate_patches(
    grid_values: np.ndarray,
    patch_size_px: int,
    stride_px: int,
    rows: int,
    cols: int,
    class_values: list[int] | None = None,
) -> np.ndarray:
    """Aggregate target-grid label pixels to one value per patch.

    Args:
        grid_values: ``(rows_px, cols_px)`` labels on the target grid, NaN where
            unlabelled; at least ``(rows - 1) * stride + patch_size`` pixels
            high and the same in width.
        patch_size_px: Patch size in grid pixels.
        stride_px: Stride in grid pixels.
        rows: Patch rows to produce.
        cols: Patch columns to produce.
        class_values: Class codes whose fraction is computed; None for the mean.

    Returns:
        ``(rows, cols)`` float64: the mean (or class fraction) of the labelled
        pixels, NaN where less than :data:`MIN_COVERED_FRACTION` is labelled.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(grid_values, (patch_size_px, patch_size_px))
    windows = windows[::stride_px, ::stride_px][:rows, :cols]  # (rows, cols, patch, patch)
    labelled = np.isfinite(windows)
    count = labelled.sum(axis=(-2, -1))
    if class_values is None:
        total = np.where(labelled, windows, 0.0).sum(axis=(-2, -1), dtype=np.float64)
    else:
        total = (np.isin(windows, class_values) & labelled).sum(axis=(-2, -1), dtype=np.float64)
    result = np.full(count.shape, np.nan)
    enough = count >= MIN_COVERED_FRACTION * patch_size_px * patch_size_px
    np.divide(total, count, out=result, where=enough & (count > 0))
    return result


def labels_from_raster(
    path: str,
    embedding: EmbeddingRaster,
    class_values: list[int] | None,
    reporter: Reporter,
    parameter_name: str = "LABELS_RASTER",
) -> PatchLabels:
    """Aggregate a label raster (band 1) onto the patches of ``embedding``.

    The raster is warped onto the target grid of the embedding raster with
    nearest neighbour for class codes (``class_values`` given). Continuous
    labels use the average of the source pixels when the source is finer than
    the grid in the same CRS, and bilinear interpolation otherwise. Reading goes
    by blocks of patch rows through a warped VRT, so the whole label grid is
    never in memory at once.

    Args:
        path: Label raster path.
        embedding: The embedding raster whose patches get labels.
        class_values: Class codes for a categorical raster, or None for a
            continuous one.
        reporter: Receives the warp decision and counts.
        parameter_name: Parameter the raster came from, used in messages.

    Returns:
        The labels per patch.

    Raises:
        MissingFileError: If GDAL cannot open ``path``.
        GridError: If the label raster has no CRS or does not overlap the embeddings.
    """
    from osgeo import gdal

    gdal.UseExceptions()
    try:
        source = gdal.Open(path)
    except RuntimeError as err:
        raise MissingFileError(
            f"{parameter_name}: cannot open label raster '{path}' ({err})."
        ) from err
    band = source.GetRasterBand(1)
    name = band.GetDescription() or "band 1"
    decisions: list[str] = []
    if source.RasterCount > 1:
        decisions.append(
            f"{parameter_name} has {source.RasterCount} bands; band 1 ({name}) was used."
        )
    if class_values is not None:
        name = "fraction of classes " + ",".join(str(code) for code in class_values)
    elif not gdal.GetDataTypeName(band.DataType).startswith("Float"):
        codes = _distinct_codes(band)
        if 2 < len(codes) <= 64:
            decisions.append(
                f"{parameter_name}: the integer raster holds only {len(codes)} distinct values "
                f"({', '.join(str(code) for code in codes[:10])}{' …' if len(codes) > 10 else ''}), so it "
                "looks like class codes, but no CLASS_VALUES were given: the probe learns the mean code of "
                "each patch. Give CLASS_VALUES to learn the fraction of those classes instead."
            )
    if not source.GetProjection():
        raise GridError(
            f"{parameter_name}: label raster '{path}' has no CRS; assign one "
            "(Raster > Projections > Assign Projection) and run again."
        )
    resampling = _resampling_method(source, embedding, class_values)
    decisions.extend(_grid_decisions(source, embedding, resampling, parameter_name))

    rows_px, cols_px = embedding.grid_shape_px
    x0, size, _, y0, _, _ = embedding.grid_geotransform
    vrt_path = f"/vsimem/fusedeo_labels_{uuid.uuid4().hex}.vrt"
    single_band = (
        gdal.Translate("", source, format="VRT", bandList=[1]) if source.RasterCount > 1 else source
    )
    warped = gdal.Warp(
        vrt_path,
        single_band,
        format="VRT",
        dstSRS=embedding.crs_wkt,
        outputBounds=(x0, y0 - rows_px * size, x0 + cols_px * size, y0),
        width=cols_px,
        height=rows_px,
        resampleAlg=resampling,
        outputType=gdal.GDT_Float32,
        dstNodata=float("nan"),
    )
    try:
        values, tracker = _aggregate_warped(warped, embedding, class_values)
    finally:
        warped = None
        gdal.Unlink(vrt_path)
    for decision in decisions:
        reporter.warning(decision)
    labels = PatchLabels(
        values=values,
        name=name,
        source=path,
        is_class_fraction=class_values is not None,
        binary_source=tracker.binary,
        non_binary_examples=tracker.examples,
        decisions=decisions,
    )
    _check_overlap(labels, parameter_name)
    return labels


def _distinct_codes(band: Any) -> list[int]:
    """Return up to 65 distinct valid values of a decimated read of an integer band."""
    width, height = min(band.XSize, 512), min(band.YSize, 512)
    values = band.ReadAsArray(buf_xsize=width, buf_ysize=height)
    nodata = band.GetNoDataValue()
    if nodata is not None:
        values = values[values != nodata]
    return [int(code) for code in np.unique(values)[:65]]


def _resampling_method(
    source: Any, embedding: EmbeddingRaster, class_values: list[int] | None
) -> str:
    """Return the GDAL resampling name that carries the labels onto the embedding grid."""
    if class_values is not None:
        return "near"
    same_crs = _srs_from_wkt(source.GetProjection()).IsSame(_srs_from_wkt(embedding.crs_wkt))
    source_pixel = abs(source.GetGeoTransform()[1])
    if same_crs and source_pixel < embedding.grid_pixel_size * (1 - 1e-6):
        # Interpolation would sample one fine pixel per grid pixel; the average uses all.
        return "average"
    return "bilinear"


def _grid_decisions(
    source: Any, embedding: EmbeddingRaster, resampling: str, parameter_name: str
) -> list[str]:
    """Describe how the label raster reaches the embedding grid, or [] when it is already on it."""
    source_srs = _srs_from_wkt(source.GetProjection())
    target_srs = _srs_from_wkt(embedding.crs_wkt)
    if not source_srs.IsSame(target_srs):
        return [
            f"{parameter_name} was reprojected from {_crs_name(source_srs)} to "
            f"{_crs_name(target_srs)} onto the embedding grid ({resampling} resampling)."
        ]
    sx0, sdx, _, sy0, _, sdy = source.GetGeoTransform()
    ex0, size, _, ey0, _, _ = embedding.grid_geotransform
    same_size = abs(sdx - size) < 1e-6 * size and abs(-sdy - size) < 1e-6 * size
    offset_x = (sx0 - ex0) / size
    offset_y = (ey0 - sy0) / size
    aligned = abs(offset_x - round(offset_x)) < 1e-6 and abs(offset_y - round(offset_y)) < 1e-6
    if same_size and aligned:
        return []
    return [
        f"{parameter_name} was resampled from {sdx:g} x {-sdy:g} pixels onto the "
        f"{size:g} x {size:g} embedding grid ({resampling} resampling)."
    ]


def _aggregate_warped(
    warped: Any, embedding: EmbeddingRaster, class_values: list[int] | None
) -> tuple[np.ndarray, _BinaryTracker]:
    stride = embedding.stride_px
    patch = embedding.patch_size_px
    band = warped.GetRasterBand(1)
    values = np.full((embedding.rows, embedding.cols), np.nan)
    tracker = _BinaryTracker()
    block_patch_rows = max(1, 4096 // max(stride, 1))
    for row in range(0, embedding.rows, block_patch_rows):
        count = min(block_patch_rows, embedding.rows - row)
        height_px = (count - 1) * stride + patch
        width_px = (embedding.cols - 1) * stride + patch
        block = band.ReadAsArray(0, row * stride, width_px, height_px).astype(np.float64)
        if class_values is None:
            tracker.update(block)
        values[row : row + count] = aggregate_patches(
            block, patch, stride, count, embedding.cols, class_values
        )
    return values, tracker


def _check_overlap(labels: PatchLabels, parameter_name: str) -> None:
    if labels.labelled_count == 0:
        raise GridError(
            f"{parameter_name}: no patch of the embedding raster has a label from "
            f"'{labels.source}' (each patch needs at least {MIN_COVERED_FRACTION:.0%} of its "
            "pixels labelled, or a point inside it). Check that the labels overlap the "
            "embedding raster."
        )


def split_ogr_path(path: str) -> tuple[str, str | None, int | None]:
    """Split a QGIS/OGR source such as ``file.gpkg|layername=fields`` into its parts.

    Returns:
        The dataset path, the layer name (or None) and the layer index (or None).
    """
    parts = path.split("|")
    layer_name: str | None = None
    layer_index: int | None = None
    for option in parts[1:]:
        key, _, value = option.partition("=")
        if key == "layername":
            layer_name = value
        elif key == "layerid" and value.isdigit():
            layer_index = int(value)
    return parts[0], layer_name, layer_index


_NUMERIC_FIELD_TYPES = ("Integer", "Integer64", "Real")


def labels_from_vector(
    path: str,
    field_name: str,
    embedding: EmbeddingRaster,
    reporter: Reporter,
    parameter_name: str = "LABELS_VECTOR",
) -> PatchLabels:
    """Label the patches of ``embedding`` from points or polygons with a numeric field.

    Points label the stride cell (output pixel) they fall in; several points
    in one cell are averaged. Polygons are rasterised on the target grid with
    their field value, and a patch takes the mean over its covered pixels when
    at least :data:`MIN_COVERED_FRACTION` of it is covered. Where polygons
    overlap, the one drawn last wins. Features in another CRS are reprojected
    to the embedding CRS, and a layer without a CRS is taken to be in it.

    Args:
        path: OGR source, optionally with ``|layername=`` or ``|layerid=``.
        field_name: Numeric attribute holding the label.
        embedding: The embedding raster whose patches get labels.
        reporter: Receives reprojection and skipped-feature counts.
        parameter_name: Parameter the layer came from, used in messages.

    Returns:
        The labels per patch.

    Raises:
        MissingFileError: If OGR cannot open the source or the layer.
        InputError: If the field is missing or not numeric, or the layer has
            lines or both points and polygons.
        GridError: If no feature labels a patch.
    """
    from osgeo import ogr

    ogr.UseExceptions()
    dataset_path, layer_name, layer_index = split_ogr_path(path)
    try:
        dataset = ogr.Open(dataset_path)
    except RuntimeError as err:
        raise MissingFileError(
            f"{parameter_name}: cannot open vector layer '{path}' ({err})."
        ) from err
    if layer_name is not None:
        layer = dataset.GetLayerByName(layer_name)
    else:
        layer = dataset.GetLayer(layer_index or 0)
    if layer is None:
        raise MissingFileError(f"{parameter_name}: no layer found in '{path}'.")
    _check_field(layer, field_name, parameter_name, path)

    decisions: list[str] = []
    transform = _vector_transform(layer, embedding, parameter_name, decisions)
    points, polygons, skipped = _collect_features(
        layer, field_name, transform, parameter_name, path
    )
    if skipped:
        decisions.append(
            f"{parameter_name}: {skipped} feature(s) without geometry or {field_name} value were skipped."
        )
    tracker = _BinaryTracker()
    if points:
        point_values = np.array([value for _, _, value in points])
        tracker.update(point_values)
        values = _label_points(points, embedding, parameter_name, decisions)
    else:
        tracker.update(np.array([value for _, value in polygons]))
        values = _label_polygons(polygons, embedding)
    for decision in decisions:
        reporter.warning(decision)
    labels = PatchLabels(
        values=values,
        name=field_name,
        source=path,
        binary_source=tracker.binary,
        non_binary_examples=tracker.examples,
        decisions=decisions,
    )
    _check_overlap(labels, parameter_name)
    return labels


def _check_field(layer, field_name: str, parameter_name: str, path: str) -> None:  # noqa: ANN001
    definition = layer.GetLayerDefn()
    index = definition.GetFieldIndex(field_name)
    names = [definition.GetFieldDefn(i).GetName() for i in range(definition.GetFieldCount())]
    if index < 0:
        raise InputError(
            f"FIELD: '{field_name}' is not a field of {parameter_name} '{path}'; its fields "
            f"are {', '.join(names) or 'none'}."
        )
    type_name = definition.GetFieldDefn(index).GetTypeName()
    if type_name not in _NUMERIC_FIELD_TYPES:
        raise InputError(
            f"FIELD: '{field_name}' of {parameter_name} '{path}' is of type {type_name}; "
            "labels need a numeric (integer or real) field."
        )


def _vector_transform(layer, embedding: EmbeddingRaster, parameter_name: str, decisions: list[str]):  # noqa: ANN001, ANN202
    from osgeo import osr

    target = _srs_from_wkt(embedding.crs_wkt)
    source = layer.GetSpatialRef()
    if source is None:
        decisions.append(
            f"{parameter_name} has no CRS; its coordinates were taken to be in the embedding "
            f"CRS {_crs_name(target)}."
        )
        return None
    source = source.Clone()
    source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if source.IsSame(target):
        return None
    decisions.append(
        f"{parameter_name} was reprojected from {_crs_name(source)} to {_crs_name(target)}, "
        "the CRS of the embedding raster."
    )
    return osr.CoordinateTransformation(source, target)


def _collect_features(layer, field_name: str, transform, parameter_name: str, path: str):  # noqa: ANN001, ANN202
    """Return ``(points, polygons, skipped)``: points as (x, y, value), polygons as (geometry, value)."""
    from osgeo import ogr

    points: list[tuple[float, float, float]] = []
    polygons: list[tuple[object, float]] = []
    skipped = 0
    layer.ResetReading()
    for feature in layer:
        geometry = feature.GetGeometryRef()
        if geometry is None or geometry.IsEmpty() or not feature.IsFieldSetAndNotNull(field_name):
            skipped += 1
            continue
        value = float(feature.GetField(field_name))
        geometry = geometry.Clone()
        if transform is not None:
            geometry.Transform(transform)
        flat_type = ogr.GT_Flatten(geometry.GetGeometryType())
        if flat_type in (ogr.wkbPoint, ogr.wkbMultiPoint):
            parts = (
                [geometry]
                if flat_type == ogr.wkbPoint
                else [geometry.GetGeometryRef(i) for i in range(geometry.GetGeometryCount())]
            )
            points.extend((part.GetX(), part.GetY(), value) for part in parts)
        elif ogr.GT_IsSurface(flat_type) or flat_type in (ogr.wkbMultiPolygon, ogr.wkbMultiSurface):
            polygons.append((geometry, value))
        else:
            raise InputError(
                f"{parameter_name}: layer '{path}' has a {ogr.GeometryTypeToName(flat_type)} "
                f"feature (id {feature.GetFID()}); labels must be points or polygons."
            )
    if points and polygons:
        raise InputError(
            f"{parameter_name}: layer '{path}' mixes points ({len(points)}) and polygons "
            f"({len(polygons)}); give points and polygons as separate layers and train on one."
        )
    return points, polygons, skipped


def _label_points(
    points: list[tuple[float, float, float]],
    embedding: EmbeddingRaster,
    parameter_name: str,
    decisions: list[str],
) -> np.ndarray:
    x0, cell_width, _, y0, _, cell_height = embedding.geotransform
    coordinates = np.array([(x, y) for x, y, _ in points])
    targets = np.array([value for _, _, value in points])
    cols = np.floor((coordinates[:, 0] - x0) / cell_width).astype(np.int64)
    rows = np.floor((coordinates[:, 1] - y0) / cell_height).astype(np.int64)
    inside = (rows >= 0) & (rows < embedding.rows) & (cols >= 0) & (cols < embedding.cols)
    outside = int((~inside).sum())
    if outside:
        decisions.append(
            f"{parameter_name}: {outside} point(s) outside the embedding raster were skipped."
        )
    total = np.zeros((embedding.rows, embedding.cols))
    count = np.zeros((embedding.rows, embedding.cols))
    np.add.at(total, (rows[inside], cols[inside]), targets[inside])
    np.add.at(count, (rows[inside], cols[inside]), 1)
    shared = int((count > 1).sum())
    if shared:
        decisions.append(
            f"{parameter_name}: {shared} patch(es) hold several points; their values were averaged."
        )
    values = np.full(total.shape, np.nan)
    np.divide(total, count, out=values, where=count > 0)
    return values


def _label_polygons(polygons: list[tuple[object, float]], embedding: EmbeddingRaster) -> np.ndarray:
    from osgeo import gdal, ogr

    gdal.UseExceptions()
    rows_px, cols_px = embedding.grid_shape_px
    memory = ogr.GetDriverByName("Memory").CreateDataSource("labels")
    layer = memory.CreateLayer("labels", srs=_srs_from_wkt(embedding.crs_wkt))
    layer.CreateField(ogr.FieldDefn("value", ogr.OFTReal))
    for geometry, value in polygons:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetGeometry(geometry)  # type: ignore[arg-type]
        feature.SetField("value", value)
        layer.CreateFeature(feature)
    # NOTE: the whole target grid is rasterised in memory (8 bytes per grid
    # pixel); polygon labels over very large areas need a block-wise version.
    raster = gdal.GetDriverByName("MEM").Create("", cols_px, rows_px, 1, gdal.GDT_Float64)
    raster.SetGeoTransform(embedding.grid_geotransform)
    raster.SetProjection(embedding.crs_wkt)
    raster.GetRasterBand(1).Fill(float("nan"))
    gdal.RasterizeLayer(raster, [1], layer, options=["ATTRIBUTE=value"])
    grid_values = raster.GetRasterBand(1).ReadAsArray()
    return aggregate_patches(
        grid_values, embedding.patch_size_px, embedding.stride_px, embedding.rows, embedding.cols
    )
