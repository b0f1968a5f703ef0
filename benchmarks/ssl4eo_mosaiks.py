"""Benchmark: samples per second of the SSL4EO dataset path with mosaiks on CPU.

Builds a dataset folder of SAMPLES samples at 264 x 264 px, four seasons, 27
channels, in the published storage (S1 float16, S2 int16, one zarr.zip per
modality). The pixels are real: the canonical stack of a WorldCereal location
(64 x 64 px, read by FusedEO's layer path) tiled to 264 x 264 px, each sample
rolled by a different offset so that no two samples are equal. The L1C
archives contain nodata only, as the source has no L1C.

Then it times, with ``run_ssl4eo`` on DEVICE=cpu:

1. a fitting run: mosaiks kernels and PCA fitted on the dataset;
2. a run in that fixed embedding space (EMBEDDING_MODEL), which reads,
   encodes, compresses and writes each sample: the throughput a large
   dataset gets, reported as samples per second.

Run it with ``bash scripts/with_env.sh .venv/bin/python benchmarks/ssl4eo_mosaiks.py``.
"""

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / ".build" / "plugins"))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from make_ssl4eo_fixture import location_stack, to_dataset_dtype, write_archive  # noqa: E402

from fusedeo.models.ssl4eo_run import Ssl4eoRequest, run_ssl4eo  # noqa: E402
from fusedeo.raster.bands import SENSOR_BANDS, Sensor, sensor_channel_slice  # noqa: E402
from fusedeo.raster.ssl4eo import ARCHIVE_SUFFIX, MODALITY_FOLDERS  # noqa: E402
from fusedeo.reporting import LoggingReporter  # noqa: E402

LOCATIONS = REPO_ROOT.parent / "shared" / "data" / "worldcereal-be"
SIDE_PX = 264


def make_dataset(root: Path, samples: int) -> None:
    """Write ``samples`` tiled real-pixel samples of 264 x 264 px under ``root``."""
    stacks = [location_stack(location)[0] for location in sorted(LOCATIONS.iterdir()) if location.is_dir()]
    for index in range(samples):
        source = stacks[index % len(stacks)]
        repeats = -(-SIDE_PX // source.shape[-1])
        tiled = np.tile(source, (1, 1, repeats, repeats))
        tiled = np.roll(tiled, shift=(7 * index, 11 * index), axis=(2, 3))[..., :SIDE_PX, :SIDE_PX]
        for sensor, folder in MODALITY_FOLDERS.items():
            stored = to_dataset_dtype(tiled[:, sensor_channel_slice(sensor)], sensor, "float16", False)
            write_archive(root / folder / "part-000000" / f"bench{index:04d}{ARCHIVE_SUFFIX}", stored,
                          SENSOR_BANDS[sensor], {})


def timed_run(request: Ssl4eoRequest) -> float:
    """Run the dataset path and return the wall time in seconds."""
    started = time.perf_counter()
    run_ssl4eo(request, LoggingReporter("fusedeo.bench"))
    return time.perf_counter() - started


def main() -> None:
    """Build the dataset, run both kinds of run and print one line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8, help="samples in the dataset (default 8)")
    parser.add_argument("--dimensions", type=int, default=4, help="PCA width of the fitting run (default 4)")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    with tempfile.TemporaryDirectory(prefix="fusedeo-ssl4eo-bench-") as folder:
        root = Path(folder)
        make_dataset(root / "dataset", arguments.samples)
        fitting = timed_run(Ssl4eoRequest(
            str(root / "dataset"), ["mosaiks"], str(root / "fitted.csv"), dimensions=arguments.dimensions,
            device="cpu", output_model_path=str(root / "space.fusedeo")))
        fixed = timed_run(Ssl4eoRequest(
            str(root / "dataset"), ["mosaiks"], str(root / "fixed.csv"), device="cpu",
            embedding_model_path=str(root / "space.fusedeo")))
    cores = Path("/proc/cpuinfo").read_text().count("processor")
    print(f"SSL4EO dataset path, mosaiks (4096 features, 2048 kernels of 3 x 3 px), {arguments.samples} samples "
          f"of 264 x 264 px x 4 seasons x 27 channels, DEVICE=cpu, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads, {cores} CPU cores")
    print(f"fitting run (kernels + PCA):     {fitting:7.1f} s  {arguments.samples / fitting:6.3f} samples/s")
    print(f"fixed space (EMBEDDING_MODEL):   {fixed:7.1f} s  {arguments.samples / fixed:6.3f} samples/s")


if __name__ == "__main__":
    main()
