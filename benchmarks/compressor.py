"""Benchmark: autoencoder compressor at the Embed2Scale winning solution's size, on the CPU.

Made-up fused vectors of width 20,992 in the winning solution's block layout
(scalemae 1536x4, prithvi 1536x1, croma 1024x4, dofa 1536x4, copernicus
768x4), seeded: a rank-64 signal plus noise, so the proxy targets are not
pure noise. The script trains one epoch on 8,111 rows (batch 32, 253 steps)
with the full architecture (20,992 -> 2,048 -> 1,024, linear decoder) and
scores the checkpoint with the label-free proxy on 1,000 held-out rows, then
exports the encoder to ONNX and compares onnxruntime and torch inference
throughput on the same rows. It prints one line per measurement. Run it with
``bash scripts/with_env.sh .venv/bin/python benchmarks/compressor.py``.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT.parent))

LAYOUT = [
    {"name": "scalemae", "channels": 1536, "seasons": 4},
    {"name": "prithvi", "channels": 1536, "seasons": 1},
    {"name": "croma", "channels": 1024, "seasons": 4},
    {"name": "dofa", "channels": 1536, "seasons": 4},
    {"name": "copernicus", "channels": 768, "seasons": 4},
]


class TimingReporter:
    """Reporter that records when the last training step finished."""

    def __init__(self) -> None:
        self.last_step_at = 0.0

    def info(self, message: str) -> None:
        print(f"  {message}")

    def warning(self, message: str) -> None:
        print(f"  warning: {message}")

    def debug(self, message: str) -> None:
        pass

    def progress(self, percent: float) -> None:
        self.last_step_at = time.perf_counter()

    def is_canceled(self) -> bool:
        return False


def made_up_features(rows: int, width: int, seed: int) -> np.ndarray:
    """Return ``(rows, width)`` float32 rows: a rank-64 signal plus unit noise."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((64, width), dtype=np.float32)
    return (rng.standard_normal((rows, 64), dtype=np.float32) @ basis
            + rng.standard_normal((rows, width), dtype=np.float32))


def throughput(run, features: np.ndarray, batch_rows: int, repeats: int) -> float:  # noqa: ANN001
    """Return rows per second of ``run`` over ``features`` in batches, best of ``repeats``."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, features.shape[0], batch_rows):
            run(features[start:start + batch_rows])
        best = min(best, time.perf_counter() - started)
    return features.shape[0] / best


def main() -> None:
    """Train one epoch, then measure inference throughput."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-rows", type=int, default=8111)
    parser.add_argument("--holdout-rows", type=int, default=1000)
    parser.add_argument("--batch-rows", type=int, default=1024, help="rows per inference call")
    arguments = parser.parse_args()

    import onnxruntime
    import torch

    from fusedeo.models.autoencoder import (
        CONDITIONINGS,
        AutoencoderConfig,
        encoder_from_state,
        export_onnx,
        fit_conditioning,
        resolve_block_weights,
        torch_reference,
        train_autoencoder,
    )
    from fusedeo.models.compressor_proxy import label_free_proxy
    from fusedeo.models.compressor_training import features_sha256

    width = sum(block["channels"] * block["seasons"] for block in LAYOUT)
    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"onnxruntime {onnxruntime.__version__}; D={width}, {arguments.train_rows} training rows, "
          f"{arguments.holdout_rows} held-out rows")
    features = made_up_features(arguments.train_rows + arguments.holdout_rows, width, seed=0)
    train, holdout = features[:arguments.train_rows], features[arguments.train_rows:]

    started = time.perf_counter()
    proxy = label_free_proxy(train, holdout, LAYOUT, seed=0)
    print(f"label-free proxy targets: {time.perf_counter() - started:.1f} s")
    config = AutoencoderConfig(epochs=1, seed=1337)
    weights = resolve_block_weights("inverse_variance", LAYOUT, train)
    reporter = TimingReporter()
    started = time.perf_counter()
    trained = train_autoencoder(train, holdout, LAYOUT, config, weights, proxy.score, reporter)
    finished = time.perf_counter()
    steps = arguments.train_rows // config.batch_size
    print(f"one epoch: {steps} steps of batch {config.batch_size} in {reporter.last_step_at - started:.1f} s "
          f"({(reporter.last_step_at - started) / steps * 1000:.0f} ms/step); checkpoint scoring (encode "
          f"{arguments.train_rows + arguments.holdout_rows} rows, held-out loss, proxy) "
          f"{finished - reporter.last_step_at:.1f} s")

    encoder = encoder_from_state(trained)
    with torch.no_grad():
        train_embeddings = encoder(torch.from_numpy(train[:4096])).numpy()
    conditioning = fit_conditioning("pca_rotated", train_embeddings)
    model_bytes = export_onnx(trained, conditioning, LAYOUT, {"kind": "autoencoder"}, {},
                              features_sha256(train), "benchmark")
    print(f"ONNX model: {len(model_bytes) / 2**20:.0f} MiB")
    session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    check = holdout[:256]
    for name in CONDITIONINGS:
        candidate = fit_conditioning(name, train_embeddings)
        candidate_session = onnxruntime.InferenceSession(
            export_onnx(trained, candidate, LAYOUT, {"kind": "autoencoder"}, {}, "", "benchmark"),
            providers=["CPUExecutionProvider"])
        reference = torch_reference(trained, candidate, check)
        difference = np.max(np.abs(candidate_session.run(None, {"features": check})[0] - reference))
        print(f"onnxruntime vs torch, {name}: max abs difference {difference:.2g} on 256 rows, outputs up to "
              f"{np.max(np.abs(reference)):.3g}")

    mean = torch.from_numpy(conditioning.mean)
    matrix = torch.from_numpy(conditioning.matrix)

    def run_torch(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return ((encoder(torch.from_numpy(batch)) - mean) @ matrix).numpy()

    def run_onnx(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {"features": batch})[0]

    rows = np.ascontiguousarray(holdout)
    run_torch(rows[:8])
    run_onnx(rows[:8])
    print(f"inference, batches of {arguments.batch_rows} rows, best of 3: torch "
          f"{throughput(run_torch, rows, arguments.batch_rows, 3):.0f} rows/s, onnxruntime "
          f"{throughput(run_onnx, rows, arguments.batch_rows, 3):.0f} rows/s")


if __name__ == "__main__":
    main()
