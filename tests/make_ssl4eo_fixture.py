"""Build SSL4EO-S12-layout zarr.zip fixtures from the real WorldCereal pixels.

Each WorldCereal location (64 x 64 px at 10 m, four seasons) is read into the
canonical season stack by FusedEO's own layer path (``build_season_stack``:
band matching, S1 warped bilinearly from 20 m onto the 10 m S2 grid) and cut
into square crops; every crop becomes one sample id with three archives,
``s1/part-NNNNNN/<id>.zarr.zip``, ``s2l1c/…`` and ``s2l2a/…``, written as
xarray writes the SSL4EO-S12-downstream data: a Zarr v2 group in a zip file
with ``bands`` (time=4, band, y, x; one chunk per time step), ``band``
names, ``time``, ``y`` and ``x`` coordinates and consolidated metadata.

Bands the source lacks (L2A B01 and B09, every L1C band) and nodata pixels
are stored as Sentinel-2 nodata (0), which the reader turns back into NaN,
exactly as the layer path fills missing bands. The root attribute
``fusedeo_fixture`` records the source and these filled bands. S2 is int16
digital numbers (+1000 on valid pixels with ``offset=True``, as in
SSL4EO-S12 v1.1); S1 is float16 dB as published, or float32 when a test
compares embeddings with ``fusedeo:embed`` on the original layers.

The script draws no random numbers, so the same call writes the same
archives. Run it as ``python tests/make_ssl4eo_fixture.py OUTPUT_FOLDER``.
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fusedeo.raster.bands import SEASONS, SENSOR_BANDS, Sensor, sensor_channel_slice
from fusedeo.raster.layers import LayerSpec
from fusedeo.raster.ssl4eo import ARCHIVE_SUFFIX, BANDS_DIMENSIONS, MODALITY_FOLDERS
from fusedeo.raster.stack import build_season_stack
from fusedeo.reporting import LoggingReporter

SAMPLES_PER_PART = 8
"""Archives per part-NNNNNN folder, so that fixtures span several part folders."""


def location_stack(location: Path) -> tuple[np.ndarray, dict[Sensor, list[str]]]:
    """Return the canonical stack ``(4, 27, H, W)`` of a WorldCereal location and its absent bands.

    The stack is read with the layer path of ``fusedeo:embed`` (S2_OFFSET
    ``without_offset``; the WorldCereal products predate the offset).
    """
    specs = []
    for season in SEASONS:
        specs.append(LayerSpec(f"S2L2A_{season.upper()}", season, Sensor.S2L2A,
                               str(location / f"s2l2a_{season}.tif")))
        specs.append(LayerSpec(f"S1_{season.upper()}", season, Sensor.S1, str(location / f"s1_{season}.tif")))
    stack = build_season_stack(specs, "without_offset", 16, 16, LoggingReporter("fusedeo.fixture"))
    try:
        values, _ = stack.read(0, 0, stack.grid.height, stack.grid.width)
        absent: dict[Sensor, list[str]] = {}
        for sensor in (Sensor.S1, Sensor.S2L1C, Sensor.S2L2A):
            present = stack.channels_present[sensor_channel_slice(sensor)]
            missing = [band for band, here in zip(SENSOR_BANDS[sensor], present) if not here]
            if missing:
                absent[sensor] = missing
    finally:
        stack.close()
    return values, absent


def write_archive(path: Path, values: np.ndarray, band_names: Sequence[str], attributes: dict) -> None:
    """Write one ``.zarr.zip`` archive with ``bands`` (time, band, y, x) and its coordinates."""
    import zarr

    path.parent.mkdir(parents=True, exist_ok=True)
    store = zarr.storage.ZipStore(str(path), mode="w")
    try:
        group = zarr.group(store=store)
        times, bands, height, width = values.shape
        array = group.create_dataset("bands", data=values, chunks=(1, bands, height, width))
        array.attrs["_ARRAY_DIMENSIONS"] = list(BANDS_DIMENSIONS)
        coordinates = {
            "band": np.asarray(band_names, dtype="<U3"),
            "time": np.arange(times, dtype=np.int64),
            "y": np.arange(height, dtype=np.int64),
            "x": np.arange(width, dtype=np.int64),
        }
        for name, data in coordinates.items():
            group.create_dataset(name, data=data).attrs["_ARRAY_DIMENSIONS"] = [name]
        group.attrs.update(attributes)
        zarr.consolidate_metadata(store)
    finally:
        store.close()


def to_dataset_dtype(values: np.ndarray, sensor: Sensor, s1_dtype: str, offset: bool) -> np.ndarray:
    """Convert canonical values ``(4, bands, H, W)`` to the dataset's storage convention."""
    if sensor is Sensor.S1:
        return values.astype(s1_dtype)
    valid = np.isfinite(values)
    stored = np.where(valid, values + (1000.0 if offset else 0.0), 0.0)
    return np.rint(stored).astype(np.int16)


def make_fixture(root: Path, locations: Sequence[Path], crop_px: int = 16, s1_dtype: str = "float16",
                 offset: bool = False) -> list[str]:
    """Write the archives of every crop of every location under ``root``.

    Args:
        root: Dataset folder to create.
        locations: WorldCereal location folders.
        crop_px: Side of each sample in pixels (64 must be a multiple).
        s1_dtype: ``float16`` (as published) or ``float32``.
        offset: Whether S2 carries the +1000 offset (SSL4EO-S12 v1.1).

    Returns:
        The sample ids, sorted. Crop (row, col) of location L has id
        ``<last 8 characters of L>_<row>_<col>``.
    """
    ids = []
    for location in locations:
        values, absent = location_stack(location)
        rows, cols = values.shape[2] // crop_px, values.shape[3] // crop_px
        for row in range(rows):
            for col in range(cols):
                identifier = f"{location.name[-8:]}_{row}_{col}"
                crop = values[:, :, row * crop_px:(row + 1) * crop_px, col * crop_px:(col + 1) * crop_px]
                attributes = {"fusedeo_fixture": {
                    "source": f"WorldCereal location {location.name}",
                    "window_px": {"row": row * crop_px, "col": col * crop_px, "size": crop_px},
                    "filled_bands": {sensor.value: bands for sensor, bands in absent.items()},
                    "fill": "bands absent from the source and nodata pixels are stored as 0 (S2) or NaN (S1), "
                            "which the reader reads as NaN",
                    "s2_offset": "with_offset" if offset else "without_offset",
                    "s1_dtype": s1_dtype,
                }}
                part = f"part-{len(ids) // SAMPLES_PER_PART:06d}"
                for sensor, folder in MODALITY_FOLDERS.items():
                    stored = to_dataset_dtype(crop[:, sensor_channel_slice(sensor)], sensor, s1_dtype, offset)
                    write_archive(root / folder / part / f"{identifier}{ARCHIVE_SUFFIX}", stored,
                                  SENSOR_BANDS[sensor], attributes)
                ids.append(identifier)
    return sorted(ids)


def main() -> None:
    """Write the fixture of both WorldCereal locations to the folder given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="dataset folder to create")
    parser.add_argument("--crop", type=int, default=16, help="sample side in pixels (default 16)")
    parser.add_argument("--s1-dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--offset", action="store_true", help="store S2 with the +1000 offset")
    arguments = parser.parse_args()
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "worldcereal-be"
    locations = sorted(path for path in data.iterdir() if path.is_dir())
    ids = make_fixture(arguments.output, locations, arguments.crop, arguments.s1_dtype, arguments.offset)
    sys.stdout.write(f"{len(ids)} samples written to {arguments.output}\n")


if __name__ == "__main__":
    main()
