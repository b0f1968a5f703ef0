"""SSL4EO-S12 dataset folders: zarr.zip cubes per location and modality → canonical season stacks.

A dataset folder contains one folder per modality (``s1``, ``s2l1c``,
``s2l2a``), each with archives ``<id>.zarr.zip`` directly in it or in
``part-*`` subfolders, as the SSL4EO-S12-downstream dataset of NeuCo-Bench
and the Embed2Scale challenge data do. Each archive is a Zarr v2 group in a
zip file, as xarray writes it: the array ``bands`` with dimensions
``(time=4, band, y, x)`` (seasons in SSL4EO-S12 order), a ``band`` array of
band names and coordinate arrays. S1 contains VV, VH in dB (float16 in the
published data), S2 contains digital numbers (int16), 0 being nodata.

:func:`read_sample` returns the canonical stack of :mod:`fusedeo.raster.bands`
for one id, with the same conventions as the layer path of ``fusedeo:embed``:
missing bands and nodata are NaN, and the S2 values carry no +1000 offset.
"""

import logging
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArchiveError, InputError, MissingFileError, import_optional
from .bands import SEASONS, SENSOR_BANDS, STACK_CHANNELS, Sensor, canonical_band_name, sensor_channel_slice
from .layers import S2_OFFSET_DN

logger = logging.getLogger(__name__)

MODALITY_FOLDERS: dict[Sensor, str] = {Sensor.S1: "s1", Sensor.S2L1C: "s2l1c", Sensor.S2L2A: "s2l2a"}
ARCHIVE_SUFFIX = ".zarr.zip"
BANDS_ARRAY = "bands"
BAND_NAMES_ARRAY = "band"
BANDS_DIMENSIONS = ("time", "band", "y", "x")

SSL4EO_OFFSET_CHOICES: tuple[str, ...] = ("without_offset", "with_offset")
"""S2 offset of a dataset: the downstream and challenge data have none, SSL4EO-S12 v1.1 has +1000."""

S2_NODATA_DN = 0
"""Sentinel-2 digital number that marks nodata, with and without the offset."""


@dataclass(frozen=True)
class Ssl4eoSample:
    """One location of a dataset folder.

    Attributes:
        id: The archive name without ``.zarr.zip``.
        paths: Archive of each modality that has this id.
    """

    id: str
    paths: dict[Sensor, Path]


@dataclass
class Ssl4eoDataset:
    """The archives of a dataset folder, matched by id across modalities.

    Attributes:
        root: The dataset folder.
        modalities: Modalities whose folder exists, in canonical order.
        samples: Every id found in any modality, sorted by id.
        duplicates: Ids found more than once in one modality, with the paths.
    """

    root: Path
    modalities: tuple[Sensor, ...]
    samples: list[Ssl4eoSample]
    duplicates: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        """Sample ids in sorted order."""
        return [sample.id for sample in self.samples]


@dataclass
class SampleStack:
    """The canonical stack of one sample and what the reader filled.

    Attributes:
        id: Sample id.
        values: float32 ``(4, 27, H, W)``: S1 in dB, S2 as digital numbers
            without offset, NaN where missing or nodata.
        filled_bands: Per modality read, the bands its archive lacks (NaN).
        empty_bands: Per modality read, the bands its archive contains
            with nodata only (NaN), in every season.
    """

    id: str
    values: np.ndarray
    filled_bands: dict[Sensor, list[str]]
    empty_bands: dict[Sensor, list[str]] = field(default_factory=dict)


def archive_id(path: Path) -> str:
    """Return the sample id of an archive path (its name without ``.zarr.zip``)."""
    return path.name[: -len(ARCHIVE_SUFFIX)]


def scan_dataset(folder: str | Path, parameter: str = "DATASET_FOLDER") -> Ssl4eoDataset:
    """Find the archives of a dataset folder and match them by id.

    Args:
        folder: The dataset folder.
        parameter: Parameter name for messages.

    Returns:
        The dataset; samples are sorted by id.

    Raises:
        MissingFileError: If the folder does not exist.
        InputError: If it has no modality folder or no archive.
    """
    root = Path(folder)
    if not root.is_dir():
        raise MissingFileError(f"{parameter}: folder '{root}' does not exist.")
    modalities = tuple(sensor for sensor, name in MODALITY_FOLDERS.items() if (root / name).is_dir())
    if not modalities:
        raise InputError(f"{parameter}: '{root}' has none of the modality folders "
                         f"{', '.join(MODALITY_FOLDERS.values())}; give the folder that contains them.")
    paths: dict[str, dict[Sensor, Path]] = {}
    duplicates: dict[str, list[Path]] = {}
    for sensor in modalities:
        modality_root = root / MODALITY_FOLDERS[sensor]
        found = sorted(modality_root.glob(f"*{ARCHIVE_SUFFIX}")) + sorted(modality_root.glob(f"*/*{ARCHIVE_SUFFIX}"))
        for path in found:
            identifier = archive_id(path)
            entry = paths.setdefault(identifier, {})
            if sensor in entry:
                duplicates.setdefault(identifier, [entry[sensor]]).append(path)
                continue
            entry[sensor] = path
    if not paths:
        raise InputError(f"{parameter}: no '*{ARCHIVE_SUFFIX}' archive found under "
                         f"{', '.join(str(root / MODALITY_FOLDERS[sensor]) for sensor in modalities)} "
                         "(directly or in part-* folders).")
    samples = [Ssl4eoSample(identifier, paths[identifier]) for identifier in sorted(paths)]
    return Ssl4eoDataset(root, modalities, samples, duplicates)


def _open_bands(path: Path, season: int | None = None
                ) -> tuple[np.ndarray, tuple[int, ...], list[str] | None, dict[str, object]]:
    """Read the ``bands`` array, its shape, the band names and the array attributes of an archive.

    With ``season``, only that index of the first (time) axis is read, which
    decodes one chunk per archive in the published layout.

    Raises:
        ArchiveError: If the file is not a readable Zarr zip archive with ``bands``.
    """
    zarr = import_optional("zarr", "reading SSL4EO-S12 zarr.zip archives")
    try:
        store = zarr.storage.ZipStore(str(path), mode="r")
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise ArchiveError(f"'{path}' is not a readable zip archive ({type(err).__name__}: {err}).") from err
    try:
        group = zarr.open_group(store, mode="r")
        if BANDS_ARRAY not in group:
            raise ArchiveError(f"'{path}' has no array '{BANDS_ARRAY}' (it has {sorted(group.array_keys())}); "
                               "expected a Zarr group with bands (time, band, y, x).")
        array = group[BANDS_ARRAY]
        attributes = dict(array.attrs)
        shape = tuple(array.shape)
        if season is not None and array.ndim == len(BANDS_DIMENSIONS):
            values = np.asarray(array[season:season + 1])
        else:
            values = np.asarray(array[...])
        names = None
        if BAND_NAMES_ARRAY in group:
            names = [item.decode() if isinstance(item, bytes) else str(item)
                     for item in np.asarray(group[BAND_NAMES_ARRAY][...]).ravel()]
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, RuntimeError, TypeError,
            zarr.errors.MetadataError, zarr.errors.GroupNotFoundError) as err:
        # Damaged chunks surface as decompression (RuntimeError) or zip CRC (BadZipFile) errors.
        raise ArchiveError(f"'{path}' cannot be read as a Zarr archive ({type(err).__name__}: {err}).") from err
    finally:
        store.close()
    return values, shape, names, attributes


def _band_positions(path: Path, sensor: Sensor, names: list[str] | None, count: int) -> dict[str, int]:
    """Map canonical band names of ``sensor`` to positions along the band axis.

    Raises:
        ArchiveError: If the bands cannot be identified.
    """
    expected = SENSOR_BANDS[sensor]
    if names is None:
        if count != len(expected):
            raise ArchiveError(f"'{path}' has {count} bands and no band names; expected {len(expected)} "
                               f"{sensor.value} bands in the order {', '.join(expected)}.")
        return {name: index for index, name in enumerate(expected)}
    if len(names) != count:
        raise ArchiveError(f"'{path}' names {len(names)} bands but its bands array has {count}.")
    positions: dict[str, int] = {}
    for index, text in enumerate(names):
        name = canonical_band_name(text, sensor)
        if name is not None and name not in positions:
            positions[name] = index
    if not positions:
        raise ArchiveError(f"'{path}' has band names {names}, none of which is a {sensor.value} band "
                           f"({', '.join(expected)}).")
    return positions


def read_modality(path: Path, sensor: Sensor, s2_offset: str, season: int | None = None
                  ) -> tuple[np.ndarray, list[str]]:
    """Read one archive as the sensor's part of the canonical stack.

    Args:
        path: The ``.zarr.zip`` archive.
        sensor: Its modality.
        s2_offset: ``without_offset`` or ``with_offset`` (subtract 1000 DN
            from valid S2 values).
        season: Read only this season index, or None for all four.

    Returns:
        float32 ``(seasons read, bands of sensor, H, W)`` in canonical units
        and band order (NaN for missing bands and nodata), and the missing
        band names.

    Raises:
        ArchiveError: If the archive is corrupt or not in the expected layout.
    """
    values, shape, names, attributes = _open_bands(path, season)
    dimensions = attributes.get("_ARRAY_DIMENSIONS")
    if len(shape) != 4 or (dimensions is not None and tuple(dimensions) != BANDS_DIMENSIONS):
        described = f"dimensions {tuple(dimensions)}" if dimensions is not None else f"shape {shape}"
        raise ArchiveError(
            f"'{path}': '{BANDS_ARRAY}' has {described}; expected (time, band, y, x) for one location. "
            "Archives with a sample dimension (SSL4EO-S12 v1.1 training files, 64 locations each) are not "
            "supported."
        )
    if shape[0] != len(SEASONS):
        raise ArchiveError(f"'{path}' has {shape[0]} time steps; expected {len(SEASONS)} seasons "
                           f"({', '.join(SEASONS)}).")
    positions = _band_positions(path, sensor, names, values.shape[1])
    expected = SENSOR_BANDS[sensor]
    output = np.full((values.shape[0], len(expected), values.shape[2], values.shape[3]), np.nan, dtype=np.float32)
    fill_value = attributes.get("_FillValue")
    for index, name in enumerate(expected):
        if name not in positions:
            continue
        raw = values[:, positions[name]]
        plane = raw.astype(np.float32)
        invalid = ~np.isfinite(plane)
        if fill_value is not None:
            invalid |= raw == fill_value
        if sensor is not Sensor.S1:
            invalid |= raw == S2_NODATA_DN
            if s2_offset == "with_offset":
                plane -= np.float32(S2_OFFSET_DN)
        plane[invalid] = np.nan
        output[:, index] = plane
    missing = [name for name in expected if name not in positions]
    return output, missing


def read_sample(sample: Ssl4eoSample, sensors: Iterable[Sensor], s2_offset: str,
                season: int | None = None) -> SampleStack:
    """Read the canonical stack ``(4, 27, H, W)`` of one sample.

    Args:
        sample: The sample.
        sensors: Modalities to read; the others stay NaN.
        s2_offset: ``without_offset`` or ``with_offset``.
        season: Read only this season index (the others stay NaN and
            ``empty_bands`` stays empty), or None for all four.

    Returns:
        The stack and the bands the reader filled.

    Raises:
        ArchiveError: If an archive is missing, corrupt, or its size differs
            from the other modalities'.
    """
    if s2_offset not in SSL4EO_OFFSET_CHOICES:
        raise InputError(f"S2_OFFSET: '{s2_offset}' is not valid for a dataset folder; expected one of "
                         f"{', '.join(SSL4EO_OFFSET_CHOICES)}.")
    parts: list[tuple[Sensor, np.ndarray]] = []
    filled: dict[Sensor, list[str]] = {}
    empty: dict[Sensor, list[str]] = {}
    for sensor in sensors:
        path = sample.paths.get(sensor)
        if path is None:
            raise ArchiveError(f"Sample '{sample.id}' has no {MODALITY_FOLDERS[sensor]} archive.")
        values, missing = read_modality(path, sensor, s2_offset, season)
        parts.append((sensor, values))
        if missing:
            filled[sensor] = missing
        if season is not None:
            continue
        nodata_only = [band for index, band in enumerate(SENSOR_BANDS[sensor])
                       if band not in missing and np.isnan(values[:, index]).all()]
        if nodata_only:
            empty[sensor] = nodata_only
    if not parts:
        raise InputError("No modality selected to read; the selected encoders read no input.")
    shapes = {sensor.value: values.shape[2:] for sensor, values in parts}
    if len(set(shapes.values())) > 1:
        raise ArchiveError(f"Sample '{sample.id}': the modalities differ in size "
                           f"({', '.join(f'{name} {shape[0]} x {shape[1]}' for name, shape in shapes.items())}).")
    height, width = parts[0][1].shape[2:]
    stack = np.full((len(SEASONS), len(STACK_CHANNELS), height, width), np.nan, dtype=np.float32)
    seasons = slice(None) if season is None else slice(season, season + 1)
    for sensor, values in parts:
        stack[seasons, sensor_channel_slice(sensor)] = values
    return SampleStack(sample.id, stack, filled, empty)


def channel_names(sensors: Sequence[Sensor]) -> list[str]:
    """Return the canonical channel names (``"s2l2a:B02"``) of ``sensors``, in stack order."""
    return [f"{sensor.value}:{band}" for sensor, band in STACK_CHANNELS if sensor in sensors]
