"""CPU throughput of the foundation-model encoders, against this machine's GEMM peak.

The script covers each registered encoder except MOSAIKS, which is
training-free and benchmarked on its own. It builds the full-size model with
seeded random weights, because speed does not depend on the weight values. It
encodes real WorldCereal patches (64 x 64 px, all four seasons, resized by
each encoder to its input size) and reports patches per second at batch 1 and
at the encoder's ``preferred_batch_size()``. FLOPs per patch are counted with
``torch.utils.flop_counter.FlopCounterMode`` (matrix products and
convolutions, 2 FLOPs per multiply-add) during the warm-up call, and the
achieved GFLOP/s is compared with float32 GEMM throughput measured first.

Run from the repository root:
    bash scripts/with_env.sh .venv/bin/python benchmarks/encoders_cpu.py --encoders croma dofa
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
WORLDCEREAL = REPO_ROOT.parent / "shared" / "data" / "worldcereal-be"
LOCATIONS = ("00002806639B424A", "0000280849BAC91C")
SEASONS = ("spring", "summer", "autumn", "winter")


def worldcereal_stack(folder: Path) -> np.ndarray:
    """Return the canonical stack ``(1, 4, 27, 64, 64)`` of one WorldCereal location."""
    from osgeo import gdal

    from fusedeo.raster.bands import STACK_CHANNELS, Sensor

    stack = np.full((1, 4, len(STACK_CHANNELS), 64, 64), np.nan, dtype=np.float32)
    for season_index, season in enumerate(SEASONS):
        for sensor, name, repeat in ((Sensor.S2L2A, "s2l2a", 1), (Sensor.S1, "s1", 2)):
            dataset = gdal.Open(str(folder / f"{name}_{season}.tif"))
            for band_number in range(1, dataset.RasterCount + 1):
                band = dataset.GetRasterBand(band_number)
                values = band.ReadAsArray().astype(np.float32)
                nodata = band.GetNoDataValue()
                if nodata is not None and not np.isnan(nodata):
                    values[values == nodata] = np.nan
                values = np.repeat(np.repeat(values, repeat, axis=0), repeat, axis=1)
                stack[0, season_index, STACK_CHANNELS.index((sensor, band.GetDescription()))] = values
    return stack


def gemm_gflops(size: int, repeats: int) -> float:
    """Return the best float32 ``size`` x ``size`` matrix-product rate in GFLOP/s."""
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def batch_of(stacks: np.ndarray, batch_size: int) -> np.ndarray:
    """Return ``batch_size`` patches, cycling through the available ones."""
    indices = [index % len(stacks) for index in range(batch_size)]
    return stacks[indices]


def time_encode(encoder, stack: np.ndarray, repeats: int) -> float:  # noqa: ANN001
    """Return the best wall time in seconds of ``encoder.encode`` over ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        encoder.encode(stack, [True] * stack.shape[1])
        best = min(best, time.perf_counter() - started)
    return best


def benchmark_encoder(name: str, stacks: np.ndarray, peak: float, repeats: int) -> dict:
    """Measure one encoder; return its row of results."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fusedeo.models.encoders import create_encoder

    started = time.perf_counter()
    encoder = create_encoder(name, device="cpu", random_weights=True)
    build_s = time.perf_counter() - started

    one = batch_of(stacks, 1)
    # FlopCounterMode tracks modules with autograd hooks, which fail on weights
    # that require grad inside the encoders' inference_mode (Copernicus-FM).
    model = getattr(encoder, "model", None)
    if model is not None:
        model.requires_grad_(False)
    counter = FlopCounterMode(display=False)
    with counter:
        encoder.encode(one, [True] * one.shape[1])
    flops_per_patch = counter.get_total_flops()

    row = {"encoder": name, "build_s": build_s, "gflop_per_patch": flops_per_patch / 1e9}
    batch_sizes = sorted({1, encoder.preferred_batch_size()})
    for batch_size in batch_sizes:
        stack = batch_of(stacks, batch_size)
        if batch_size > 1:
            encoder.encode(stack, [True] * stack.shape[1])  # warm-up at this batch size
        seconds = time_encode(encoder, stack, repeats)
        patches_per_s = batch_size / seconds
        achieved = flops_per_patch * patches_per_s / 1e9
        row[f"batch_{batch_size}"] = {
            "seconds": seconds,
            "patches_per_s": patches_per_s,
            "gflops": achieved,
            "fraction_of_gemm": achieved / peak,
        }
    row["preferred_batch_size"] = encoder.preferred_batch_size()
    row["threads"] = torch.get_num_threads()
    return row


def main() -> int:
    """Run the benchmark and print a Markdown table plus JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--encoders", nargs="*", help="encoders to run (default: all but mosaiks)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per batch size (best is kept)")
    parser.add_argument("--gemm-size", type=int, default=2048, help="side of the GEMM used for the peak")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    arguments = parser.parse_args()

    import torch

    from fusedeo.models.encoders import ENCODER_NAMES

    names = arguments.encoders or [name for name in ENCODER_NAMES if name != "mosaiks"]
    stacks = np.concatenate([worldcereal_stack(WORLDCEREAL / location) for location in LOCATIONS])
    peak = gemm_gflops(arguments.gemm_size, repeats=10)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, float32 GEMM {arguments.gemm_size}: {peak:.1f} GFLOP/s")

    rows = []
    for name in names:
        rows.append(benchmark_encoder(name, stacks, peak, arguments.repeats))
        print(json.dumps(rows[-1]), flush=True)

    print("\n| encoder | GFLOP/patch | batch | patches/s | GFLOP/s | of GEMM peak |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        for key, result in row.items():
            if key.startswith("batch_"):
                print(f"| {row['encoder']} | {row['gflop_per_patch']:.0f} | {key.removeprefix('batch_')} | "
                      f"{result['patches_per_s']:.4f} | {result['gflops']:.1f} | "
                      f"{100 * result['fraction_of_gemm']:.0f} % |")
    if arguments.json:
        arguments.json.write_text(json.dumps({"gemm_gflops": peak, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
