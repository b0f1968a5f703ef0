"""Band catalogue: sensors, seasons, band names and the canonical stack order.

Sentinel-2 bands are named in ESA form only (``B01`` … ``B12``, ``B8A``);
other spellings (``B2``, ``b8a``, STAC common names) are mapped at the
boundary by :func:`canonical_band_name`.

The canonical season stack that every encoder receives has shape
``(T, C, H, W)`` with ``T = 4`` seasons in :data:`SEASONS` order and
``C = 27`` channels in :data:`STACK_CHANNELS` order: Sentinel-1 VV, VH in dB,
then the 13 Sentinel-2 L1C bands, then the 12 Sentinel-2 L2A bands, both as
digital numbers (reflectance × 10000) *without* the +1000 processing-baseline
offset. Missing bands, missing sensors and invalid pixels are NaN.
"""

import re
from enum import Enum


class Sensor(str, Enum):
    """Input product types FusedEO accepts."""

    S1 = "s1"
    S2L1C = "s2l1c"
    S2L2A = "s2l2a"


SEASONS: tuple[str, ...] = ("spring", "summer", "autumn", "winter")
"""Season order of SSL4EO-S12: Mar–May, Jun–Aug, Sep–Nov, Dec–Feb."""

S1_BANDS: tuple[str, ...] = ("VV", "VH")
S2L1C_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07",
    "B08", "B8A", "B09", "B10", "B11", "B12",
)
S2L2A_BANDS: tuple[str, ...] = tuple(band for band in S2L1C_BANDS if band != "B10")

SENSOR_BANDS: dict[Sensor, tuple[str, ...]] = {
    Sensor.S1: S1_BANDS,
    Sensor.S2L1C: S2L1C_BANDS,
    Sensor.S2L2A: S2L2A_BANDS,
}

STACK_CHANNELS: tuple[tuple[Sensor, str], ...] = tuple(
    (sensor, band) for sensor in (Sensor.S1, Sensor.S2L1C, Sensor.S2L2A)
    for band in SENSOR_BANDS[sensor]
)
"""Canonical channel order of the season stack (27 channels)."""


def channel_index(sensor: Sensor, band: str) -> int:
    """Return the 0-based index of ``band`` of ``sensor`` in the canonical stack."""
    return STACK_CHANNELS.index((sensor, band))


def sensor_channel_slice(sensor: Sensor) -> slice:
    """Return the slice of the canonical stack that contains ``sensor``'s bands."""
    start = channel_index(sensor, SENSOR_BANDS[sensor][0])
    return slice(start, start + len(SENSOR_BANDS[sensor]))


# Centre wavelengths in nanometres (Sentinel-2A spectral response, ESA).
S2_WAVELENGTH_NM: dict[str, float] = {
    "B01": 443.0, "B02": 490.0, "B03": 560.0, "B04": 665.0, "B05": 705.0,
    "B06": 740.0, "B07": 783.0, "B08": 842.0, "B8A": 865.0, "B09": 945.0,
    "B10": 1375.0, "B11": 1610.0, "B12": 2190.0,
}

# STAC "eo:common_name" values and other frequent descriptions of S2 bands.
_S2_ALIASES: dict[str, str] = {
    "coastal": "B01", "blue": "B02", "green": "B03", "red": "B04",
    "rededge1": "B05", "rededge2": "B06", "rededge3": "B07", "nir": "B08",
    "nir08": "B8A", "nir09": "B09", "cirrus": "B10", "swir16": "B11", "swir22": "B12",
}
_S2_PATTERN = re.compile(r"(?<![A-Z0-9])B0?(1[0-2]|[1-9]|8A)(?![0-9A-Z])", re.IGNORECASE)
_S1_PATTERN = re.compile(r"(?<![A-Z])(VV|VH)(?![A-Z])", re.IGNORECASE)


def canonical_band_name(description: str, sensor: Sensor) -> str | None:
    """Map a band description to the ESA band name of ``sensor``.

    Args:
        description: The GDAL band description, for example ``"B2"``,
            ``"B08 (842 nm)"``, ``"red"`` or ``"VV"``.
        sensor: The sensor the layer was given as.

    Returns:
        The canonical name (``"B02"``, ``"VV"`` …), or None when the
        description names no band of this sensor.
    """
    text = description.strip()
    if not text:
        return None
    if sensor is Sensor.S1:
        matches = {match.upper() for match in _S1_PATTERN.findall(text)}
        return matches.pop() if len(matches) == 1 else None
    alias = _S2_ALIASES.get(text.lower().replace("_", "").replace(" ", ""))
    if alias is not None:
        return alias
    matches = {match.upper() for match in _S2_PATTERN.findall(text)}
    if len(matches) != 1:
        return None
    number = matches.pop()
    name = "B8A" if number == "8A" else f"B{int(number):02d}"
    return name if name in SENSOR_BANDS[sensor] else None
