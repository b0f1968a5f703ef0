"""Season stack: every input layer warped onto the target grid, read by window.

Each layer is warped lazily through an in-memory GDAL VRT (bilinear, float32,
NaN as nodata), so reading a window warps only that window and memory does
not grow with the area. :meth:`SeasonStack.read` returns the canonical stack
of :mod:`fusedeo.raster.bands` for a window.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from osgeo import gdal

from ..errors import InputError
from ..reporting import Reporter
from .bands import SEASONS, STACK_CHANNELS, Sensor, channel_index
from .grid import Bounds, TargetGrid, build_target_grid
from .layers import InspectedLayer, LayerSpec, inspect_layer, open_raster

gdal.UseExceptions()
logger = logging.getLogger(__name__)


@dataclass
class PreparedLayer:
    """An inspected layer and its warped view on the target grid."""

    layer: InspectedLayer
    warped: gdal.Dataset
    season_index: int
    channels: list[tuple[int, int]]  # (canonical channel index, 1-based band of the warped view)


class SeasonStack:
    """All input layers on one target grid.

    Attributes:
        grid: The target grid.
        layers: The prepared layers.
        seasons_present: Per season, whether any layer was given.
        channels_present: Per canonical channel, whether any layer provides it.
        decisions: Every decision taken while preparing, as sentences.
    """

    def __init__(self, grid: TargetGrid, layers: list[PreparedLayer], decisions: list[str]) -> None:
        """Create a stack from prepared layers (use :func:`build_season_stack`)."""
        self.grid = grid
        self.layers = layers
        self.decisions = decisions
        self.seasons_present = tuple(any(item.season_index == index for item in layers)
                                     for index in range(len(SEASONS)))
        present = [False] * len(STACK_CHANNELS)
        for item in layers:
            for channel, _ in item.channels:
                present[channel] = True
        self.channels_present = tuple(present)

    def sensors_present(self) -> set[Sensor]:
        """Return the sensors given in at least one season."""
        return {item.layer.spec.sensor for item in self.layers}

    def read(self, row: int, col: int, height: int, width: int,
             season: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read a window of the target grid as a canonical stack.

        Args:
            row: First grid row (0-based).
            col: First grid column (0-based).
            height: Rows to read.
            width: Columns to read.
            season: Read only the layers of this season index (the other
                seasons stay NaN), or None for all.

        Returns:
            ``stack`` float32 ``(T, C, height, width)`` in canonical units with
            NaN where missing or invalid, and ``valid`` bool
            ``(T, height, width)``: True where every layer of that season has
            data (False for seasons without layers).
        """
        stack = np.full((len(SEASONS), len(STACK_CHANNELS), height, width), np.nan, dtype=np.float32)
        valid = np.zeros((len(SEASONS), height, width), dtype=bool)
        valid[list(np.flatnonzero(self.seasons_present))] = True
        for item in self.layers:
            if season is not None and item.season_index != season:
                continue
            bands = [band for _, band in item.channels]
            values = item.warped.ReadAsArray(col, row, width, height, band_list=bands)
            values = np.asarray(values, dtype=np.float32).reshape(len(bands), height, width)
            values = self._to_canonical_units(item.layer, values)
            valid[item.season_index] &= np.all(np.isfinite(values), axis=0)
            for (channel, _), plane in zip(item.channels, values):
                stack[item.season_index, channel] = plane
        return stack, valid

    @staticmethod
    def _to_canonical_units(layer: InspectedLayer, values: np.ndarray) -> np.ndarray:
        """Convert warped values to dB (S1) or DN without offset (S2)."""
        if layer.to_db:
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.where(values > 0, 10.0 * np.log10(values), np.nan).astype(np.float32)
            return values
        if layer.scale != 1.0 or layer.offset_dn != 0.0:
            values = values * np.float32(layer.scale) - np.float32(layer.offset_dn)
        return values

    def close(self) -> None:
        """Release the warped datasets."""
        for item in self.layers:
            item.warped = None
        self.layers = []


def _warp_to_grid(dataset: gdal.Dataset, layer: InspectedLayer, grid: TargetGrid) -> gdal.Dataset:
    """Return an in-memory VRT of ``dataset`` warped bilinearly onto ``grid``."""
    options = {
        "format": "VRT",
        "dstSRS": grid.crs_wkt,
        "outputBounds": (grid.left, grid.top - grid.height * grid.pixel_size,
                         grid.left + grid.width * grid.pixel_size, grid.top),
        "width": grid.width,
        "height": grid.height,
        "resampleAlg": "bilinear",
        "outputType": gdal.GDT_Float32,
        "workingType": gdal.GDT_Float32,
        "dstNodata": "nan",
        "multithread": False,
    }
    if layer.nodata is not None and not np.isnan(layer.nodata):
        options["srcNodata"] = layer.nodata
    try:
        return gdal.Warp("", dataset, options=gdal.WarpOptions(**options))
    except RuntimeError as err:
        raise InputError(f"{layer.spec.label}: GDAL cannot warp the layer onto the target grid ({err}).") from err


def build_season_stack(specs: Sequence[LayerSpec], s2_offset_mode: str, patch_size_px: int,
                       stride_px: int, reporter: Reporter, extent: Bounds | None = None,
                       extent_crs_wkt: str | None = None) -> SeasonStack:
    """Inspect the input layers, choose the target grid and warp every layer onto it.

    Args:
        specs: Input layers, at least one.
        s2_offset_mode: ``auto``, ``with_offset`` or ``without_offset``.
        patch_size_px: Patch side in target-grid pixels.
        stride_px: Patch stride in target-grid pixels.
        reporter: Receives every decision.
        extent: Optional area to restrict the run to.
        extent_crs_wkt: CRS of ``extent``.

    Returns:
        The season stack.

    Raises:
        InputError: If no layer is given or a layer cannot be used.
    """
    if not specs:
        raise InputError(
            "No input layer given: set at least one of the season layers (for example S2L2A_SUMMER or "
            "S1_SUMMER)."
        )
    opened = []
    for spec in specs:
        layer = inspect_layer(spec, s2_offset_mode, reporter)
        opened.append((layer, open_raster(spec)))
    grid, decisions = build_target_grid(opened, patch_size_px, stride_px, reporter, extent, extent_crs_wkt)
    all_decisions = [sentence for layer, _ in opened for sentence in layer.decisions] + decisions

    prepared = []
    for layer, dataset in opened:
        warped = _warp_to_grid(dataset, layer, grid)
        channels = [(channel_index(layer.spec.sensor, name), band)
                    for name, band in sorted(layer.band_indices.items(), key=lambda item: item[1])]
        prepared.append(PreparedLayer(layer, warped, SEASONS.index(layer.spec.season), channels))
    return SeasonStack(grid, prepared, all_decisions)
