"""Stack single-band files (as in a SAFE product) into one described VRT.

Sentinel-2 products ship one file per band at 10, 20 and 60 m. FusedEO
layers are multi-band rasters whose bands are named by description, so this
module stacks band files into a VRT at the finest resolution (bilinear) and
writes the ESA band names into the band descriptions.
"""

import re
from pathlib import Path

from osgeo import gdal

from ..errors import InputError, MissingFileError
from .bands import SENSOR_BANDS, Sensor, canonical_band_name

gdal.UseExceptions()

_BAND_IN_NAME = re.compile(r"(?:^|[_\-.])(B\d{1,2}A?)(?=[_\-.]|$)", re.IGNORECASE)


def find_band_files(folder: str | Path, sensor: Sensor) -> dict[str, Path]:
    """Find one file per band of ``sensor`` in ``folder`` by the band name in the file name.

    Args:
        folder: Folder holding files such as ``T31UDS_B02_10m.jp2`` or ``s2_B8A.tif``.
        sensor: Sentinel-2 product level whose bands are looked for.

    Returns:
        Canonical band name → file, in the sensor's band order.

    Raises:
        MissingFileError: If the folder does not exist or contains no band file.
        InputError: If two files give the same band.
    """
    directory = Path(folder)
    if not directory.is_dir():
        raise MissingFileError(f"Band folder '{directory}' does not exist.")
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        match = _BAND_IN_NAME.search(path.stem)
        if not path.is_file() or match is None or path.suffix.lower() in (".xml", ".aux", ".ovr"):
            continue
        name = canonical_band_name(match.group(1), sensor)
        if name is None:
            continue
        if name in found:
            raise InputError(f"Band folder '{directory}': both '{found[name].name}' and '{path.name}' give {name}.")
        found[name] = path
    if not found:
        raise MissingFileError(f"Band folder '{directory}' contains no file named after a {sensor.value} band "
                               "(for example '*_B02.tif').")
    return {name: found[name] for name in SENSOR_BANDS[sensor] if name in found}


def build_band_stack_vrt(band_files: dict[str, Path], output_vrt: str | Path) -> Path:
    """Write a VRT that stacks band files at the finest resolution, with band descriptions.

    Args:
        band_files: Canonical band name → file, in the wanted band order.
        output_vrt: Path of the VRT to write.

    Returns:
        The VRT path.

    Raises:
        InputError: If GDAL cannot build the VRT.
    """
    names = list(band_files)
    try:
        options = gdal.BuildVRTOptions(separate=True, resolution="highest", resampleAlg="bilinear")
        dataset = gdal.BuildVRT(str(output_vrt), [str(band_files[name]) for name in names], options=options)
    except RuntimeError as err:
        raise InputError(f"Cannot stack band files into '{output_vrt}' ({err}).") from err
    for index, name in enumerate(names, start=1):
        dataset.GetRasterBand(index).SetDescription(name)
    dataset.FlushCache()
    dataset = None
    return Path(output_vrt)
