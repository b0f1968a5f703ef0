"""Target grid and patch grid.

The target grid is the one projected raster grid that every input layer is
warped onto. The patch grid divides it into patches of ``patch_size_px``
placed every ``stride_px`` pixels; output pixel ``(r, c)`` covers the stride
cell whose top-left grid pixel is ``(r * stride_px, c * stride_px)``
(pixel-is-area), and its patch starts at the same pixel.
"""

import math
from dataclasses import dataclass

from osgeo import gdal, osr

from ..errors import GridError
from ..reporting import Reporter
from .bands import Sensor
from .layers import InspectedLayer

gdal.UseExceptions()

MAX_PATCHES = 10_000_000
"""Upper bound on patches per run, to catch unit mistakes before any work."""


@dataclass(frozen=True)
class Bounds:
    """Extent in CRS units (left, bottom, right, top)."""

    left: float
    bottom: float
    right: float
    top: float

    def intersection(self, other: "Bounds") -> "Bounds | None":
        """Return the common part of two extents, or None if they do not overlap."""
        left, right = max(self.left, other.left), min(self.right, other.right)
        bottom, top = max(self.bottom, other.bottom), min(self.top, other.top)
        if left >= right or bottom >= top:
            return None
        return Bounds(left, bottom, right, top)

    def __str__(self) -> str:
        """Format as ``left, bottom, right, top``."""
        return f"{self.left:.2f}, {self.bottom:.2f}, {self.right:.2f}, {self.top:.2f}"


@dataclass(frozen=True)
class TargetGrid:
    """A north-up raster grid in a projected CRS.

    Attributes:
        crs_wkt: CRS as WKT.
        left: X of the left edge (CRS units).
        top: Y of the top edge (CRS units).
        pixel_size: Side of a square pixel (CRS units, usually metres).
        width: Columns.
        height: Rows.
    """

    crs_wkt: str
    left: float
    top: float
    pixel_size: float
    width: int
    height: int

    @property
    def geotransform(self) -> tuple[float, float, float, float, float, float]:
        """GDAL geotransform of the grid."""
        return (self.left, self.pixel_size, 0.0, self.top, 0.0, -self.pixel_size)

    @property
    def bounds(self) -> Bounds:
        """Extent of the grid."""
        return Bounds(self.left, self.top - self.height * self.pixel_size,
                      self.left + self.width * self.pixel_size, self.top)

    def to_json(self) -> dict[str, object]:
        """Return the grid as a JSON-serialisable dict."""
        srs = osr.SpatialReference(wkt=self.crs_wkt)
        authority = srs.GetAuthorityName(None)
        code = srs.GetAuthorityCode(None)
        return {"crs": f"{authority}:{code}" if authority and code else self.crs_wkt,
                "geotransform": list(self.geotransform), "width": self.width, "height": self.height}


@dataclass(frozen=True)
class PatchGrid:
    """Patches of ``patch_size_px`` every ``stride_px`` pixels on a target grid."""

    grid: TargetGrid
    patch_size_px: int
    stride_px: int

    @property
    def rows(self) -> int:
        """Number of patch rows (output raster height)."""
        return (self.grid.height - self.patch_size_px) // self.stride_px + 1

    @property
    def cols(self) -> int:
        """Number of patch columns (output raster width)."""
        return (self.grid.width - self.patch_size_px) // self.stride_px + 1

    @property
    def count(self) -> int:
        """Number of patches."""
        return self.rows * self.cols

    @property
    def output_geotransform(self) -> tuple[float, float, float, float, float, float]:
        """Geotransform of the output raster (one pixel per stride cell)."""
        size = self.stride_px * self.grid.pixel_size
        return (self.grid.left, size, 0.0, self.grid.top, 0.0, -size)

    def window(self, row: int, col: int) -> tuple[int, int]:
        """Return the target-grid (row, col) offset of patch ``(row, col)``."""
        return row * self.stride_px, col * self.stride_px


def layer_bounds(dataset: gdal.Dataset) -> Bounds:
    """Return the extent of a dataset in its own CRS (handles rotation terms)."""
    gt = dataset.GetGeoTransform()
    xs, ys = [], []
    for px, py in ((0, 0), (dataset.RasterXSize, 0), (0, dataset.RasterYSize),
                   (dataset.RasterXSize, dataset.RasterYSize)):
        xs.append(gt[0] + px * gt[1] + py * gt[2])
        ys.append(gt[3] + px * gt[4] + py * gt[5])
    return Bounds(min(xs), min(ys), max(xs), max(ys))


def spatial_reference(wkt: str) -> osr.SpatialReference:
    """Return an SRS with x/y (east/north) axis order."""
    srs = osr.SpatialReference(wkt=wkt)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    return srs


def transform_bounds(bounds: Bounds, source_wkt: str, target_wkt: str) -> Bounds:
    """Transform an extent between CRSs, densifying the edges."""
    source, target = spatial_reference(source_wkt), spatial_reference(target_wkt)
    if source.IsSame(target):
        return bounds
    transform = osr.CoordinateTransformation(source, target)
    left, bottom, right, top = transform.TransformBounds(
        bounds.left, bounds.bottom, bounds.right, bounds.top, 21)
    return Bounds(left, bottom, right, top)


def utm_wkt_for(bounds: Bounds, crs_wkt: str) -> tuple[str, str]:
    """Return the WKT and name of the UTM zone at the centre of ``bounds``."""
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    geographic = transform_bounds(bounds, crs_wkt, wgs84.ExportToWkt())
    lon = (geographic.left + geographic.right) / 2
    lat = (geographic.bottom + geographic.top) / 2
    zone = min(60, max(1, int(math.floor((lon + 180) / 6)) + 1))
    epsg = (32600 if lat >= 0 else 32700) + zone
    utm = osr.SpatialReference()
    utm.ImportFromEPSG(epsg)
    return utm.ExportToWkt(), f"EPSG:{epsg} (UTM zone {zone}{'N' if lat >= 0 else 'S'})"


def _reference_layer(layers: list[tuple[InspectedLayer, gdal.Dataset]]) -> tuple[InspectedLayer, gdal.Dataset]:
    """Pick the layer that defines the grid: the finest Sentinel-2 layer, else the finest."""
    optical = [item for item in layers if item[0].spec.sensor is not Sensor.S1]
    candidates = optical or layers
    return min(candidates, key=lambda item: abs(item[1].GetGeoTransform()[1]))


def build_target_grid(layers: list[tuple[InspectedLayer, gdal.Dataset]], patch_size_px: int,
                      stride_px: int, reporter: Reporter, extent: Bounds | None = None,
                      extent_crs_wkt: str | None = None) -> tuple[TargetGrid, list[str]]:
    """Choose the target grid shared by all layers.

    The CRS and pixel size come from the finest Sentinel-2 layer (a geographic
    CRS is replaced by the UTM zone of the area's centre). The extent is the
    common area of all layers (and of ``extent`` if given), snapped inward to
    the reference layer's pixel edges.

    Args:
        layers: Inspected layers with their open datasets.
        patch_size_px: Patch side, to reject areas smaller than one patch.
        stride_px: Patch stride, for the size check.
        reporter: Receives the decisions.
        extent: Optional area to restrict the run to.
        extent_crs_wkt: CRS of ``extent`` (defaults to the target CRS).

    Returns:
        The grid and the decisions as sentences.

    Raises:
        GridError: On disjoint layers, empty overlap or an area below one patch.
    """
    decisions: list[str] = []
    reference, reference_dataset = _reference_layer(layers)
    reference_wkt = reference_dataset.GetProjection()
    if not reference_wkt:
        raise GridError(f"{reference.spec.label}: the layer has no CRS; assign one in QGIS "
                        "(Layer Properties > Source) or with gdal_edit.py -a_srs.")
    reference_srs = spatial_reference(reference_wkt)
    reference_gt = reference_dataset.GetGeoTransform()
    reference_bounds = layer_bounds(reference_dataset)

    if reference_srs.IsProjected():
        target_wkt = reference_wkt
        pixel_size = min(abs(reference_gt[1]), abs(reference_gt[5]))
        snap_origin = (reference_gt[0], reference_gt[3])
    else:
        target_wkt, name = utm_wkt_for(reference_bounds, reference_wkt)
        pixel_size = round(abs(reference_gt[5]) * 110_574.0, 1)
        snap_origin = (0.0, 0.0)
        sentence = (f"{reference.spec.label} has a geographic CRS; every layer is reprojected to {name} "
                    f"at {pixel_size} m pixels.")
        decisions.append(sentence)
        reporter.warning(sentence)

    common = transform_bounds(reference_bounds, reference_wkt, target_wkt)
    for layer, dataset in layers:
        wkt = dataset.GetProjection()
        if not wkt:
            raise GridError(f"{layer.spec.label}: the layer has no CRS; assign one in QGIS "
                            "(Layer Properties > Source) or with gdal_edit.py -a_srs.")
        bounds = transform_bounds(layer_bounds(dataset), wkt, target_wkt)
        overlap = common.intersection(bounds)
        if overlap is None:
            raise GridError(
                f"{layer.spec.label} does not overlap {reference.spec.label}: its extent is {bounds} and "
                f"the common area of the other layers is {common} (in the target CRS). Give layers of "
                "the same area."
            )
        common = overlap
        if not spatial_reference(wkt).IsSame(spatial_reference(target_wkt)):
            sentence = f"{layer.spec.label}: reprojected on the fly to the target CRS."
            decisions.append(sentence)
            reporter.warning(sentence)
    if extent is not None:
        restricted = common.intersection(transform_bounds(extent, extent_crs_wkt or target_wkt, target_wkt))
        if restricted is None:
            raise GridError(f"EXTENT: {extent} does not overlap the layers' common area {common}.")
        common = restricted

    origin_x, origin_y = snap_origin
    left = origin_x + math.ceil((common.left - origin_x) / pixel_size - 1e-6) * pixel_size
    top = origin_y - math.ceil((origin_y - common.top) / pixel_size - 1e-6) * pixel_size
    width = int(math.floor((common.right - left) / pixel_size + 1e-6))
    height = int(math.floor((top - common.bottom) / pixel_size + 1e-6))
    grid = TargetGrid(target_wkt, left, top, pixel_size, max(width, 0), max(height, 0))
    names = ", ".join(layer.spec.parameter for layer, _ in layers)
    if grid.width < patch_size_px or grid.height < patch_size_px:
        raise GridError(
            f"The common area of the layers ({names}) is {grid.width} x {grid.height} pixels of "
            f"{pixel_size:g} m, smaller than one patch of PATCH_SIZE={patch_size_px} pixels. Use a smaller "
            "PATCH_SIZE or layers that cover a larger common area."
        )
    patches = PatchGrid(grid, patch_size_px, stride_px)
    if patches.count > MAX_PATCHES:
        raise GridError(
            f"The run would have {patches.count} patches ({patches.rows} x {patches.cols}) on a grid of "
            f"{grid.width} x {grid.height} pixels; more than {MAX_PATCHES}. Check PATCH_SIZE and STRIDE "
            "(in pixels of the target grid) or restrict EXTENT."
        )
    decisions.append(
        f"Target grid: {grid.to_json()['crs']}, {pixel_size:g} m pixels, {grid.width} x {grid.height} "
        f"pixels, extent {grid.bounds}."
    )
    return grid, decisions
