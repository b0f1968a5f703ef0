"""Train an autoencoder compressor on pooled feature stores and write it as ONNX with a report.

The stores are read and pooled (their layouts and encoder fingerprints must
match), and the rows are split into training and held-out sets with the seed.
The proxy (labels or label-free targets) scores the checkpoints of training,
and then chooses the output conditioning. The chosen encoder is exported to
ONNX, and onnxruntime must reproduce torch before the model and the report are
written. Nothing is written when the run fails or is cancelled.
"""

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import InputError, ModelFileError, RunCancelledError
from ..raster.writer import PendingOutputs
from ..reporting import Reporter
from .autoencoder import (
    AS_TRAINED,
    CONDITIONINGS,
    INVERSE_VARIANCE,
    KIND,
    PCA_ROTATED,
    WHITENED,
    AutoencoderConfig,
    Conditioning,
    TrainedAutoencoder,
    encode,
    encoder_from_state,
    export_onnx,
    fit_conditioning,
    resolve_block_weights,
    torch_reference,
    train_autoencoder,
)
from .compressor import OnnxCompressor
from .compressor_proxy import MIN_ROWS_PER_SPLIT, RidgeProxy, label_free_proxy
from .compressor_report import write_compressor_report
from .device import select_torch_device
from .feature_store import PooledFeatures, read_pooled
from .neuco_proxy import NeucoProxy, neuco_proxy

logger = logging.getLogger(__name__)

Proxy = RidgeProxy | NeucoProxy
"""A checkpoint proxy: NeuCo-Bench scores with labels, ridge probes on label-free targets without."""

AUTO = "auto"
CONDITIONING_CHOICES = (AUTO, *CONDITIONINGS)
# onnxruntime must reproduce torch within this maximum absolute difference,
# relative to the output scale when that exceeds 1. float32 sums over tens of
# thousands of inputs differ by summation order, so at D = 20,992 the outputs
# differ by about 1e-6 of the encoder output's magnitude (27e-6 for outputs up
# to 40 in benchmarks/compressor.py), and the output conditioning multiplies
# such differences by up to its largest singular value (whitening: 42e-6 for
# outputs up to 6).
EXPORT_TOLERANCE = 1e-5
_EXPORT_CHECK_ROWS = 256
_HASH_CHUNK_ROWS = 1024


@dataclass
class CompressorTrainingRequest:
    """Parameters of ``fusedeo:traincompressor`` after reading.

    Attributes:
        feature_paths: Feature-store folders to pool.
        output_path: Destination ``.onnx``.
        report_path: Destination ``.html``, or None.
        config: Architecture and optimiser settings.
        labels_folder: Folder of NeuCo-Bench label files, or None for label-free proxy targets.
        conditioning: ``auto`` or one of ``as_trained``, ``pca_rotated``, ``whitened``.
        block_weights: ``inverse_variance``, ``equal`` or a weight per block name.
        holdout_fraction: Share of the rows held out for checkpoint selection.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    feature_paths: list[str]
    output_path: str
    report_path: str | None
    config: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    labels_folder: str | None = None
    conditioning: str = AUTO
    block_weights: str | dict[str, float] = INVERSE_VARIANCE
    holdout_fraction: float = 0.2
    device: str = "cpu"


@dataclass
class CompressorTrainingResult:
    """Outputs and choices of a training run.

    Attributes:
        output_path: The ONNX compressor.
        report_path: The HTML report, or None.
        trained: The chosen encoder and every checkpoint.
        conditioning: The output conditioning baked into the model.
        conditioning_scores: Proxy score per conditioning, when ``auto`` compared them.
        proxy_kind: ``labels`` or ``label-free``.
        max_abs_difference: Largest difference between onnxruntime and torch on the check rows.
        summary: The training summary stored in the model.
    """

    output_path: str
    report_path: str | None
    trained: TrainedAutoencoder
    conditioning: str
    conditioning_scores: dict[str, float]
    proxy_kind: str
    max_abs_difference: float
    summary: dict[str, Any]


def parse_block_weights(text: str) -> str | dict[str, float]:
    """Parse the BLOCK_WEIGHTS text: empty or ``inverse_variance``, ``equal``, or ``name=weight`` pairs.

    Raises:
        InputError: If a pair is malformed or a weight is not a number.
    """
    text = text.strip()
    if not text:
        return INVERSE_VARIANCE
    if "=" not in text:
        return text
    weights = {}
    for pair in text.split(","):
        name, separator, value = pair.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError as err:
            raise InputError(f"BLOCK_WEIGHTS: '{pair.strip()}' is not name=weight with a numeric weight.") from err
        if not separator or not name.strip():
            raise InputError(f"BLOCK_WEIGHTS: '{pair.strip()}' is not name=weight.")
    return weights


def check_training_request(request: CompressorTrainingRequest) -> None:
    """Reject parameter values that make no sense, before any data is read.

    Raises:
        InputError: Naming the parameter, its value and what is expected.
    """
    if request.config.dimensions < 1:
        raise InputError(f"DIMENSIONS: {request.config.dimensions}; expected 1 or more.")
    if request.config.epochs < 1:
        raise InputError(f"EPOCHS: {request.config.epochs}; expected 1 or more.")
    if request.config.checkpoint_interval < 0:
        raise InputError(f"CHECKPOINT_INTERVAL: {request.config.checkpoint_interval}; expected 0 (automatic) or "
                         "more.")
    if not 0.0 < request.holdout_fraction < 1.0:
        raise InputError(f"HOLDOUT_FRACTION: {request.holdout_fraction}; expected a value between 0 and 1.")
    if request.conditioning not in CONDITIONING_CHOICES:
        raise InputError(f"OUTPUT_CONDITIONING: '{request.conditioning}' is not valid; expected one of "
                         f"{', '.join(CONDITIONING_CHOICES)}.")
    if not str(request.output_path).lower().endswith(".onnx"):
        raise InputError(f"OUTPUT_COMPRESSOR: '{request.output_path}' must end in .onnx.")


def features_sha256(features: np.ndarray) -> str:
    """Return the sha256 of float32 fused vectors in row order."""
    digest = hashlib.sha256()
    for start in range(0, features.shape[0], _HASH_CHUNK_ROWS):
        digest.update(np.ascontiguousarray(features[start:start + _HASH_CHUNK_ROWS], dtype=np.float32).tobytes())
    return digest.hexdigest()


def split_rows(count: int, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted training and held-out row indices of a seeded random split.

    Raises:
        InputError: If either split would have fewer than three rows.
    """
    holdout_count = int(round(holdout_fraction * count))
    if holdout_count < MIN_ROWS_PER_SPLIT or count - holdout_count < MIN_ROWS_PER_SPLIT:
        raise InputError(
            f"FEATURES: {count} rows with HOLDOUT_FRACTION={holdout_fraction:g} give {count - holdout_count} "
            f"training and {holdout_count} held-out rows; each needs at least {MIN_ROWS_PER_SPLIT}. Pool more "
            "feature stores (smaller PATCH_SIZE or STRIDE, more areas) or change HOLDOUT_FRACTION."
        )
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[holdout_count:]), np.sort(order[:holdout_count])


def _build_proxy(request: CompressorTrainingRequest, pooled: PooledFeatures, train_rows: np.ndarray,
                 holdout_rows: np.ndarray, reporter: Reporter) -> Proxy:
    """Return the NeuCo-Bench proxy when a labels folder is given, else the label-free one."""
    if request.labels_folder:
        proxy = neuco_proxy(request.labels_folder, [pooled.ids[row] for row in train_rows],
                            [pooled.ids[row] for row in holdout_rows], reporter)
        reporter.info(f"Proxy: NeuCo-Bench score (neuco probe, {proxy.k_folds} splits, mean Q) on "
                      f"{len(proxy.tasks)} labelled task(s) from {request.labels_folder}.")
    else:
        proxy = label_free_proxy(pooled.features[train_rows], pooled.features[holdout_rows], pooled.layout,
                                 request.config.seed)
        reporter.info("Proxy: no LABELS_FOLDER, so ridge probes predict label-free targets derived from the fused "
                      "vectors (per-block season means and leading principal components).")
    for note in proxy.notes:
        reporter.info(f"Proxy task {note}")
    return proxy


def _choose_conditioning(request: CompressorTrainingRequest, proxy: Proxy, train_embeddings: np.ndarray,
                         holdout_embeddings: np.ndarray,
                         reporter: Reporter) -> tuple[Conditioning, dict[str, float]]:
    """Fit the requested conditioning, or under ``auto`` the one the proxy prefers."""
    samples, dimensions = train_embeddings.shape
    if request.conditioning != AUTO:
        choice = fit_conditioning(request.conditioning, train_embeddings)
        reporter.info(f"Output conditioning: {choice.name} (OUTPUT_CONDITIONING).")
        return choice, {}
    if proxy.kind != "labels":
        # With label-free targets the proxy measures information, not how the reference probe trains, so it
        # cannot choose. A PCA rotation keeps all information and decorrelates the dimensions.
        choice = fit_conditioning(PCA_ROTATED, train_embeddings)
        reporter.warning("Output conditioning: pca_rotated (OUTPUT_CONDITIONING=auto without LABELS_FOLDER; "
                         "give labels to let the proxy choose).")
        return choice, {}
    scores = {}
    candidates = {}
    for name in CONDITIONINGS:
        candidates[name] = fit_conditioning(name, train_embeddings)
        scores[name] = proxy.score(candidates[name].apply(train_embeddings),
                                   candidates[name].apply(holdout_embeddings))
    # max keeps the first of equal scores, and CONDITIONINGS lists the least transformed first.
    best = max(CONDITIONINGS, key=lambda name: scores[name])
    reporter.info("Output conditioning: " + best + " chosen by the proxy (" +
                  ", ".join(f"{name} {score:.4f}" for name, score in scores.items()) + ").")
    if best == WHITENED and samples <= dimensions:
        reporter.warning(f"Whitening with {samples} training rows for {dimensions} dimensions: directions "
                         "without training variance are scaled by a floor, not measured.")
    return candidates[best], scores


def _check_export(model_bytes: bytes, trained: TrainedAutoencoder, conditioning: Conditioning,
                  features: np.ndarray, reporter: Reporter) -> float:
    """Return the max absolute difference between onnxruntime and torch on some rows.

    Raises:
        ModelFileError: If it exceeds the tolerance.
    """
    rows = np.ascontiguousarray(features[:_EXPORT_CHECK_ROWS], dtype=np.float32)
    runtime = OnnxCompressor(model_bytes, "trained autoencoder", "cpu").compress(rows)
    reference = torch_reference(trained, conditioning, rows)
    difference = float(np.max(np.abs(runtime - reference)))
    magnitude = float(np.max(np.abs(reference)))
    if conditioning.matrix is not None:
        code = torch_reference(trained, Conditioning(AS_TRAINED), rows)
        gain = float(np.linalg.norm(conditioning.matrix.astype(np.float64), ord=2))
        magnitude = max(magnitude, float(np.max(np.abs(code))) * gain)
    tolerance = EXPORT_TOLERANCE * max(1.0, magnitude)
    if difference > tolerance:
        raise ModelFileError(f"The exported compressor differs from the trained model by {difference:.3g} at an "
                             f"output scale of {magnitude:.3g} (allowed {tolerance:.3g}); the ONNX export is wrong.")
    reporter.info(f"onnxruntime reproduces torch within {difference:.2g} (max abs difference over "
                  f"{rows.shape[0]} rows, output scale {magnitude:.3g}, allowed {tolerance:.2g}).")
    return difference


def train_compressor(request: CompressorTrainingRequest, reporter: Reporter) -> CompressorTrainingResult:
    """Train an autoencoder compressor and write it as ONNX, with an HTML report.

    Raises:
        InputError: For invalid parameters, stores or labels.
        LayoutMismatchError: If the stores hold features of different encoders.
        RunCancelledError: If the reporter is cancelled; nothing is written.
    """
    check_training_request(request)
    device = select_torch_device(request.device, reporter)
    pooled = read_pooled(request.feature_paths)
    count, width = pooled.features.shape
    described = ", ".join(f"{block['name']} {block['channels']}x{block['seasons']}" for block in pooled.layout)
    reporter.info(f"Pooled {count} fused vectors of width {width} ({described}) from {len(pooled.paths)} "
                  "feature store(s).")
    sha256 = features_sha256(pooled.features)
    config = request.config
    train_rows, holdout_rows = split_rows(count, request.holdout_fraction, config.seed)
    train_features = np.ascontiguousarray(pooled.features[train_rows])
    holdout_features = np.ascontiguousarray(pooled.features[holdout_rows])
    reporter.info(f"Split (seed {config.seed}): {train_rows.size} training and {holdout_rows.size} held-out rows.")
    proxy = _build_proxy(request, pooled, train_rows, holdout_rows, reporter)
    block_weights = resolve_block_weights(request.block_weights, pooled.layout, train_features)
    reporter.info("Block weights of the loss: " + ", ".join(f"{name} {value:.4g}"
                                                           for name, value in block_weights.items()) +
                  (f" ({request.block_weights})" if isinstance(request.block_weights, str) else " (given)") + ".")
    if train_rows.size < config.batch_size:
        reporter.warning(f"Only {train_rows.size} training rows: batches have {train_rows.size} rows instead of "
                         f"{config.batch_size}.")

    # Training owns progress 0-90 % and checks for cancel every batch.
    trained = train_autoencoder(train_features, holdout_features, pooled.layout, config, block_weights,
                                proxy.score, reporter, device)
    lowest = min(trained.checkpoints, key=lambda point: point.holdout_loss)
    reporter.info(f"Chosen checkpoint: epoch {trained.chosen_epoch} (proxy {trained.chosen.proxy:.4f}); the lowest "
                  f"held-out loss was at epoch {lowest.epoch}.")

    encoder = encoder_from_state(trained)
    train_embeddings = encode(encoder, train_features, "cpu")
    holdout_embeddings = encode(encoder, holdout_features, "cpu")
    conditioning, conditioning_scores = _choose_conditioning(request, proxy, train_embeddings, holdout_embeddings,
                                                             reporter)
    reporter.progress(95)
    summary = _summary(request, pooled, trained, proxy, conditioning, conditioning_scores, train_rows.size,
                       holdout_rows.size, sha256)
    normalisation = {
        "input": "per-row LayerNorm over the whole fused vector (learned scale and bias), no dataset statistics",
        "loss_block_weights": block_weights,
        "output_conditioning": conditioning.name,
    }
    model_bytes = export_onnx(trained, conditioning, pooled.layout, summary, normalisation, sha256,
                              pooled.encoder_fingerprint)
    difference = _check_export(model_bytes, trained, conditioning, holdout_features, reporter)
    if reporter.is_canceled():
        raise RunCancelledError("Training cancelled before writing; no compressor was written.")

    pending = PendingOutputs()
    try:
        model_path = pending.add(request.output_path)
        model_path.write_bytes(model_bytes)
        if request.report_path:
            write_compressor_report(str(pending.add(request.report_path)),
                                    _report_rows(summary, difference, request), _report_notes(summary, proxy),
                                    trained.checkpoints, trained.chosen_epoch, proxy.kind)
        pending.commit()
    except BaseException:
        pending.discard()
        raise
    reporter.progress(100)
    return CompressorTrainingResult(request.output_path, request.report_path, trained, conditioning.name,
                                    conditioning_scores, proxy.kind, difference, summary)


def _summary(request: CompressorTrainingRequest, pooled: PooledFeatures, trained: TrainedAutoencoder,
             proxy: Proxy, conditioning: Conditioning, conditioning_scores: dict[str, float],
             train_count: int, holdout_count: int, sha256: str) -> dict[str, Any]:
    """Return the training summary stored in the model metadata."""
    config = trained.config
    return {
        "kind": KIND,
        "fusedeo_version": __version__,
        "input_width": trained.input_width,
        "output_width": config.dimensions,
        "hidden_width": config.hidden_width,
        "samples": train_count + holdout_count,
        "train_samples": train_count,
        "holdout_samples": holdout_count,
        "holdout_fraction": request.holdout_fraction,
        "seed": config.seed,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "weight_decay": config.weight_decay,
        "dropout": config.dropout,
        "learning_rate_decay": "x0.1 at 60 % and 90 % of the steps",
        "block_weights": trained.block_weights,
        "block_weighting": request.block_weights if isinstance(request.block_weights, str) else "given",
        "proxy": proxy.kind,
        "proxy_tasks": [task.name for task in proxy.tasks],
        "labels_folder": request.labels_folder,
        "checkpoint_epochs": [point.epoch for point in trained.checkpoints],
        "proxy_curve": [point.proxy for point in trained.checkpoints],
        "holdout_loss_curve": [point.holdout_loss for point in trained.checkpoints],
        "train_loss_curve": [point.train_loss for point in trained.checkpoints],
        "chosen_epoch": trained.chosen_epoch,
        "conditioning": conditioning.name,
        "conditioning_requested": request.conditioning,
        "conditioning_scores": conditioning_scores,
        "feature_stores": [str(path) for path in pooled.paths],
        "encoders": pooled.encoders,
        "encoder_fingerprint": pooled.encoder_fingerprint,
        "training_features_sha256": sha256,
    }


def _report_rows(summary: dict[str, Any], difference: float,
                 request: CompressorTrainingRequest) -> list[tuple[str, str]]:
    """Return the summary table of the report."""
    chosen = summary["checkpoint_epochs"].index(summary["chosen_epoch"])
    return [
        ("Compressor", str(Path(request.output_path).name)),
        ("Widths", f"{summary['input_width']} -> {summary['hidden_width']} -> {summary['output_width']}"),
        ("Feature stores", "; ".join(summary["feature_stores"])),
        ("Rows", f"{summary['train_samples']} training, {summary['holdout_samples']} held out "
                 f"(seed {summary['seed']})"),
        ("Epochs", str(summary["epochs"])),
        ("Chosen epoch", f"{summary['chosen_epoch']} (proxy {summary['proxy_curve'][chosen]:.4f}, held-out loss "
                         f"{summary['holdout_loss_curve'][chosen]:.6g})"),
        ("Proxy", f"{summary['proxy']}: {', '.join(summary['proxy_tasks'])}"),
        ("Output conditioning", summary["conditioning"]),
        ("onnxruntime vs torch", f"max abs difference {difference:.2g}"),
        ("Training features sha256", summary["training_features_sha256"]),
        ("Encoder fingerprint", summary["encoder_fingerprint"]),
    ]


def _report_notes(summary: dict[str, Any], proxy: Proxy) -> list[str]:
    """Return the decisions listed in the report."""
    notes = [f"Loss block weights ({summary['block_weighting']}): "
             + ", ".join(f"{name} {value:.4g}" for name, value in summary["block_weights"].items()) + "."]
    notes += [f"Proxy task {note}" for note in proxy.notes]
    if summary["conditioning_scores"]:
        notes.append("Output conditioning chosen by the proxy: " + ", ".join(
            f"{name} {score:.4f}" for name, score in summary["conditioning_scores"].items()) + ".")
    elif summary["conditioning_requested"] == AUTO:
        notes.append("Output conditioning pca_rotated: auto without labels cannot compare conditionings.")
    else:
        notes.append(f"Output conditioning {summary['conditioning']} as requested.")
    return notes
