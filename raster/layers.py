"""Input layers: band matching, unit detection and the S2 offset decision.

Each input layer is a GDAL raster given for one season and one sensor. This
module works out which canonical band each raster band contains and which bands
are missing (they are filled later). It also decides how to convert the
values to the canonical units: S1 in dB, S2 as digital numbers without the
+1000 offset. Every decision is kept as a sentence for the log and the output
metadata.
"""

import logging
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from osgeo import gdal

from ..errors import BandMismatchError, InputError, MissingFileError
from ..reporting import Reporter
from .bands import SENSOR_BANDS, Sensor, canonical_band_name

gdal.UseExceptions()
logger = logging.getLogger(__name__)

S2_OFFSET_CHOICES: tuple[str, ...] = ("auto", "with_offset", "without_offset")
S2_OFFSET_DN = 1000.0
"""Offset that ESA adds to S2 digital numbers from processing baseline 04.00 on."""

_SAMPLE_SIDE_PX = 512
_METADATA_FILE_NAMES = ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml")


@dataclass(frozen=True)
class LayerSpec:
    """One input layer as the user gave it.

    Attributes:
        parameter: Name of the parameter the layer came from (``S2L2A_SPRING``).
        season: One of :data:`fusedeo.raster.bands.SEASONS`.
        sensor: The sensor and product level.
        path: GDAL dataset path.
        name: Layer name to show in messages (defaults to the file name).
    """

    parameter: str
    season: str
    sensor: Sensor
    path: str
    name: str = ""

    @property
    def label(self) -> str:
        """Return ``PARAMETER ('name')`` for messages."""
        return f"{self.parameter} ('{self.name or Path(self.path).name}')"


@dataclass
class InspectedLayer:
    """Decisions FusedEO took about one input layer.

    Attributes:
        spec: The layer as given.
        band_indices: Canonical band name to 1-based GDAL band index.
        filled_bands: Canonical bands the layer lacks (filled later).
        scale: Factor applied to the values (10000 for S2 reflectance in 0–1).
        offset_dn: Digital numbers subtracted after scaling (S2 offset).
        to_db: Whether S1 linear power is converted to dB.
        nodata: Source nodata value used when warping (None: NaN only).
        decisions: Sentences describing every decision, for log and metadata.
    """

    spec: LayerSpec
    band_indices: dict[str, int]
    filled_bands: list[str]
    scale: float = 1.0
    offset_dn: float = 0.0
    to_db: bool = False
    nodata: float | None = None
    decisions: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """Return the decisions as a JSON-serialisable dict for provenance."""
        return {
            "parameter": self.spec.parameter,
            "season": self.spec.season,
            "sensor": self.spec.sensor.value,
            "path": self.spec.path,
            "bands": {name: index for name, index in self.band_indices.items()},
            "filled_bands": self.filled_bands,
            "scale": self.scale,
            "offset_dn": self.offset_dn,
            "linear_to_db": self.to_db,
            "nodata": None if self.nodata is None or np.isnan(self.nodata) else self.nodata,
            "decisions": self.decisions,
        }


def open_raster(spec: LayerSpec) -> gdal.Dataset:
    """Open the layer's dataset read-only.

    Raises:
        MissingFileError: If the file does not exist.
        InputError: If GDAL cannot open it as a raster.
    """
    if "://" not in spec.path and not spec.path.startswith("/vsi") and not Path(spec.path).exists():
        raise MissingFileError(f"{spec.label}: file '{spec.path}' does not exist.")
    try:
        dataset = gdal.Open(spec.path, gdal.GA_ReadOnly)
    except RuntimeError as err:
        raise InputError(f"{spec.label}: GDAL cannot open '{spec.path}' as a raster ({err}).") from err
    if dataset is None or dataset.RasterCount == 0:
        raise InputError(f"{spec.label}: '{spec.path}' contains no raster bands.")
    return dataset


def match_bands(dataset: gdal.Dataset, spec: LayerSpec, reporter: Reporter) -> tuple[dict[str, int], list[str], list[str]]:
    """Work out which canonical band each raster band contains.

    Bands are matched by description first. Without usable descriptions, a
    raster whose band count equals the full band set of its sensor is taken in
    the standard order, with a warning.

    Returns:
        Band name → 1-based band index, the missing band names, and decisions.

    Raises:
        BandMismatchError: If the bands cannot be identified.
    """
    expected = SENSOR_BANDS[spec.sensor]
    count = dataset.RasterCount
    descriptions = [dataset.GetRasterBand(i).GetDescription() for i in range(1, count + 1)]
    names = [canonical_band_name(text, spec.sensor) for text in descriptions]
    decisions: list[str] = []
    order = ", ".join(expected)

    if any(names):
        indices: dict[str, int] = {}
        for band_number, name in enumerate(names, start=1):
            if name is None:
                continue
            if name in indices:
                raise BandMismatchError(
                    f"{spec.label}: bands {indices[name]} and {band_number} are both described as {name}; "
                    "each band may appear once. Fix the band descriptions of the layer."
                )
            indices[name] = band_number
        ignored = [f"{number} ('{text}')" for number, (text, name) in enumerate(zip(descriptions, names), 1)
                   if name is None]
        if ignored:
            decisions.append(
                f"{spec.label}: ignored band(s) {', '.join(ignored)}: the description names no "
                f"{spec.sensor.value.upper()} band ({order})."
            )
        decisions.append(f"{spec.label}: bands matched by description: "
                         + ", ".join(f"{name}=band {number}" for name, number in indices.items()) + ".")
    elif count == len(expected):
        indices = {name: number for number, name in enumerate(expected, start=1)}
        decisions.append(
            f"{spec.label}: no band descriptions name the bands; assuming the {count} bands are in the "
            f"standard order {order}."
        )
    else:
        other = Sensor.S1 if spec.sensor is not Sensor.S1 else Sensor.S2L2A
        if descriptions and all(canonical_band_name(text, other) for text in descriptions):
            kind = "Sentinel-1" if other is Sensor.S1 else "Sentinel-2"
            season = spec.season.upper()
            target = f"S1_{season}" if other is Sensor.S1 else f"S2L2A_{season} or S2L1C_{season}"
            raise BandMismatchError(
                f"{spec.label}: its bands {descriptions!r} look like {kind} bands; give this layer as "
                f"{target} instead of {spec.parameter}."
            )
        raise BandMismatchError(
            f"{spec.label}: has {count} band(s) whose descriptions do not name "
            f"{spec.sensor.value.upper()} bands ({descriptions!r}); expected {len(expected)} bands in the "
            f"order {order}, or band descriptions such as 'B02' or 'VV'. Set the band descriptions "
            "(for example with gdal_edit.py or a VRT) or give the bands in the standard order."
        )

    missing = [name for name in expected if name not in indices]
    if spec.sensor is Sensor.S1 and missing:
        raise BandMismatchError(
            f"{spec.label}: Sentinel-1 band(s) {', '.join(missing)} not found; expected VV and VH "
            f"(band descriptions {descriptions!r})."
        )
    for decision in decisions:
        reporter.warning(decision) if "assuming" in decision or "ignored" in decision else reporter.info(decision)
    return indices, missing, decisions


def sample_band_values(dataset: gdal.Dataset, band_number: int, nodata: float | None) -> np.ndarray:
    """Return the valid values of a decimated read of one band (float64, 1-D)."""
    width = min(dataset.RasterXSize, _SAMPLE_SIDE_PX)
    height = min(dataset.RasterYSize, _SAMPLE_SIDE_PX)
    values = dataset.GetRasterBand(band_number).ReadAsArray(
        buf_xsize=width, buf_ysize=height).astype(np.float64)
    valid = np.isfinite(values)
    if nodata is not None and not np.isnan(nodata):
        valid &= values != nodata
    return values[valid]


def find_product_metadata(path: str) -> Path | None:
    """Find a Sentinel-2 product metadata file (MTD_MSIL*.xml) for ``path``.

    Looks at the file itself, then in its folder and up to four parent folders
    (a band file sits a few levels below the SAFE root).
    """
    candidate = Path(path)
    if candidate.name in _METADATA_FILE_NAMES and candidate.is_file():
        return candidate
    folder = candidate.parent
    for _ in range(5):
        for name in _METADATA_FILE_NAMES:
            if (folder / name).is_file():
                return folder / name
        if folder.parent == folder:
            break
        folder = folder.parent
    return None


def read_offset_from_metadata(metadata_file: Path) -> tuple[bool, str]:
    """Decide from product metadata whether S2 values carry the +1000 offset.

    Returns:
        Whether the offset is present, and the evidence as text.

    Raises:
        InputError: If the file cannot be parsed.
    """
    try:
        root = ElementTree.parse(metadata_file).getroot()
    except (ElementTree.ParseError, OSError) as err:
        raise InputError(f"S2_OFFSET: cannot read product metadata '{metadata_file}' ({err}).") from err
    offsets = [element.text for element in root.iter()
               if element.tag.endswith(("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET")) and element.text]
    if offsets:
        values = {float(text) for text in offsets}
        present = any(value != 0 for value in values)
        return present, f"{metadata_file.name} lists add-offset values {sorted(values)}"
    baselines = [element.text for element in root.iter()
                 if element.tag.endswith("PROCESSING_BASELINE") and element.text]
    if baselines:
        match = re.match(r"\s*(\d+)\.(\d+)", baselines[0])
        if match:
            present = (int(match.group(1)), int(match.group(2))) >= (4, 0)
            return present, f"{metadata_file.name} gives processing baseline {baselines[0].strip()}"
    return False, f"{metadata_file.name} has no offset or processing-baseline entry"


def decide_s2_offset(spec: LayerSpec, mode: str, visible_low_dn: float | None) -> tuple[float, str, bool]:
    """Decide the DN offset to subtract from an S2 layer.

    Args:
        spec: The S2 layer.
        mode: ``auto``, ``with_offset`` or ``without_offset``.
        visible_low_dn: 1st percentile of the layer's visible bands (DN), used
            only for a plausibility warning, or None.

    Returns:
        Offset in DN, the decision as a sentence, and whether it is a warning.
    """
    if mode == "with_offset":
        return S2_OFFSET_DN, f"{spec.label}: S2_OFFSET=with_offset: subtracting {S2_OFFSET_DN:.0f} DN.", False
    if mode == "without_offset":
        return 0.0, f"{spec.label}: S2_OFFSET=without_offset: values used as they are.", False
    metadata_file = find_product_metadata(spec.path)
    if metadata_file is not None:
        present, evidence = read_offset_from_metadata(metadata_file)
        if present:
            return S2_OFFSET_DN, f"{spec.label}: {evidence}: subtracting {S2_OFFSET_DN:.0f} DN.", False
        return 0.0, f"{spec.label}: {evidence}: no offset to remove.", False
    sentence = (
        f"{spec.label}: no product metadata (MTD_MSIL1C.xml or MTD_MSIL2A.xml) found next to the layer; "
        "assuming its values carry no +1000 offset. Set S2_OFFSET=with_offset for products of "
        "processing baseline 04.00 or later (acquired from 25 January 2022, or reprocessed)."
    )
    if visible_low_dn is not None and visible_low_dn >= S2_OFFSET_DN:
        sentence += (f" The darkest visible-band values (1st percentile {visible_low_dn:.0f} DN) are at "
                     "or above 1000, which suggests that the offset is present.")
    return 0.0, sentence, True


def inspect_layer(spec: LayerSpec, s2_offset_mode: str, reporter: Reporter) -> InspectedLayer:
    """Open a layer and decide band mapping, units and offset.

    Args:
        spec: The layer.
        s2_offset_mode: One of :data:`S2_OFFSET_CHOICES`.
        reporter: Receives every decision.

    Returns:
        The inspected layer.

    Raises:
        InputError: On unreadable files, unidentifiable bands or impossible units.
    """
    if s2_offset_mode not in S2_OFFSET_CHOICES:
        raise InputError(f"S2_OFFSET: '{s2_offset_mode}' is not valid; expected one of "
                         f"{', '.join(S2_OFFSET_CHOICES)}.")
    dataset = open_raster(spec)
    indices, missing, decisions = match_bands(dataset, spec, reporter)
    first_band = dataset.GetRasterBand(next(iter(indices.values())))
    nodata = first_band.GetNoDataValue()
    data_type = gdal.GetDataTypeName(first_band.DataType)
    is_float = data_type.startswith("Float")
    layer = InspectedLayer(spec=spec, band_indices=indices, filled_bands=missing,
                           nodata=nodata, decisions=list(decisions))

    if missing:
        sentence = (f"{spec.label}: band(s) {', '.join(missing)} missing; they are filled with the band's "
                    "normalisation mean (zero after normalisation) for every encoder.")
        layer.decisions.append(sentence)
        reporter.warning(sentence)

    if spec.sensor is Sensor.S1:
        if not is_float:
            raise InputError(
                f"{spec.label}: Sentinel-1 data type is {data_type}; expected float backscatter in dB "
                "or linear power. Convert the layer to Float32 (for example with gdal_translate -ot Float32 "
                "and the product's calibration)."
            )
        values = np.concatenate([sample_band_values(dataset, index, nodata) for index in indices.values()])
        if values.size == 0:
            raise InputError(f"{spec.label}: the layer has no valid pixels.")
        negative_fraction = float(np.mean(values < 0))
        if negative_fraction < 0.5:
            layer.to_db = True
            sentence = (f"{spec.label}: values look like linear power ({100 * negative_fraction:.0f} % "
                        "negative); converting to dB with 10·log10, non-positive values become nodata.")
            layer.decisions.append(sentence)
            reporter.warning(sentence)
        else:
            layer.decisions.append(f"{spec.label}: values are in dB.")
        return layer

    if nodata is None and not is_float:
        layer.nodata = 0.0
        sentence = f"{spec.label}: no nodata value set; treating 0 as nodata (the Sentinel-2 convention)."
        layer.decisions.append(sentence)
        reporter.info(sentence)
    visible = [indices[name] for name in ("B02", "B03", "B04") if name in indices]
    samples = [sample_band_values(dataset, index, layer.nodata) for index in visible or list(indices.values())]
    values = np.concatenate(samples) if samples else np.empty(0)
    if values.size == 0:
        raise InputError(f"{spec.label}: the layer has no valid pixels.")
    if is_float and np.percentile(values, 99) <= 2.0:
        layer.scale = 10000.0
        sentence = (f"{spec.label}: float values up to {np.percentile(values, 99):.3f} look like reflectance "
                    "in 0–1; multiplying by 10000 to get digital numbers.")
        layer.decisions.append(sentence)
        reporter.warning(sentence)
    low_dn = float(np.percentile(values, 1)) * layer.scale
    layer.offset_dn, sentence, is_warning = decide_s2_offset(spec, s2_offset_mode, low_dn)
    layer.decisions.append(sentence)
    reporter.warning(sentence) if is_warning else reporter.info(sentence)
    return layer
