"""Autoencoder compressor: training with proxy-chosen checkpoints, output conditioning, ONNX export.

The architecture follows the Embed2Scale winning solution (KerekesDavid/
embed2scale-solution, ``encoder.py`` and ``decoder.py``): LayerNorm over the
whole fused vector → Dropout 0.1 → Linear(D, 2048) → GELU → Dropout 0.1 →
Linear(2048, K) as encoder, and one Linear(K, D) as decoder, so the code stays
linearly decodable. The loss is the per-block MSE summed with block weights,
and the optimiser AdamW (learning rate 1e-4, weight decay 0.05, batch 32) with
the learning rate multiplied by 0.1 at 60 % and 90 % of the steps.

Checkpoints are scored by a downstream proxy (see ``compressor_proxy``), and
the best-scoring one is kept, not the one with the lowest reconstruction
error. Training is seeded; on the CPU, the same data, seed and thread count
give identical weights.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, RunCancelledError, import_optional
from ..reporting import Reporter
from .compressor import INPUT_NAME, OUTPUT_NAME

logger = logging.getLogger(__name__)

KIND = "autoencoder"
AS_TRAINED = "as_trained"
PCA_ROTATED = "pca_rotated"
WHITENED = "whitened"
CONDITIONINGS = (AS_TRAINED, PCA_ROTATED, WHITENED)
INVERSE_VARIANCE = "inverse_variance"
EQUAL = "equal"
LAYER_NORM_EPSILON = 1e-5
# Whitening divides by the square root of each principal variance. Variances
# below this fraction of the largest are raised to it, so that directions the
# training embeddings barely span are not blown up.
WHITENING_FLOOR = 1e-6
_EVAL_BATCH_ROWS = 1024


@dataclass(frozen=True)
class AutoencoderConfig:
    """Training settings; the defaults are those of the Embed2Scale winning solution.

    Attributes:
        dimensions: Embedding width ``K``.
        epochs: Passes over the training split.
        seed: Seed of weight initialisation, dropout and shuffling.
        hidden_width: Width of the hidden layer.
        batch_size: Rows per optimiser step.
        learning_rate: AdamW learning rate before the two decays.
        weight_decay: AdamW weight decay.
        dropout: Dropout probability of the input and of the hidden layer.
        checkpoint_interval: Epochs between scored checkpoints; 0 picks about
            32 checkpoints over the run (every 5 epochs for 160 epochs).
    """

    dimensions: int = 1024
    epochs: int = 160
    seed: int = 1337
    hidden_width: int = 2048
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.05
    dropout: float = 0.1
    checkpoint_interval: int = 0

    def checkpoint_epochs(self) -> list[int]:
        """Return the epochs (1-based) after which a checkpoint is scored; the last epoch always is."""
        interval = self.checkpoint_interval or max(1, round(self.epochs / 32))
        epochs = list(range(interval, self.epochs + 1, interval))
        if not epochs or epochs[-1] != self.epochs:
            epochs.append(self.epochs)
        return epochs


@dataclass
class Checkpoint:
    """Scores of the encoder after one epoch.

    Attributes:
        epoch: 1-based epoch.
        proxy: Proxy score on the held-out split (higher is better).
        holdout_loss: Weighted per-block MSE on the held-out split.
        train_loss: Mean weighted loss of the epoch's training batches (with dropout).
    """

    epoch: int
    proxy: float
    holdout_loss: float
    train_loss: float

    def to_json(self) -> dict[str, Any]:
        """Return the checkpoint as a JSON-serialisable dict."""
        return {"epoch": self.epoch, "proxy": self.proxy, "holdout_loss": self.holdout_loss,
                "train_loss": self.train_loss}


@dataclass
class TrainedAutoencoder:
    """The encoder of the chosen checkpoint and the training record.

    Attributes:
        encoder_state: Encoder weights (float32 numpy arrays) of the chosen checkpoint.
        input_width: ``D``.
        config: Training settings.
        checkpoints: Every scored checkpoint, in epoch order.
        chosen_epoch: Epoch of the checkpoint with the best proxy score.
        block_weights: Loss weight per block name.
    """

    encoder_state: dict[str, np.ndarray]
    input_width: int
    config: AutoencoderConfig
    checkpoints: list[Checkpoint]
    chosen_epoch: int
    block_weights: dict[str, float] = field(default_factory=dict)

    @property
    def chosen(self) -> Checkpoint:
        """The chosen checkpoint."""
        return next(point for point in self.checkpoints if point.epoch == self.chosen_epoch)


def resolve_block_weights(spec: str | dict[str, float], layout: list[dict[str, Any]],
                          train_features: np.ndarray) -> dict[str, float]:
    """Return the loss weight of every block.

    Args:
        spec: ``"inverse_variance"`` (each block weighted by the inverse of its
            mean per-value variance on the training split, so wide or
            large-valued blocks do not dominate), ``"equal"``, or a weight per
            block name.
        layout: Fused blocks.
        train_features: ``(n_train, D)`` fused vectors of the training split.

    Raises:
        InputError: If a named weight is missing, unknown or not positive.
    """
    names = [block["name"] for block in layout]
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - set(names))
        missing = [name for name in names if name not in spec]
        if unknown or missing:
            raise InputError(f"BLOCK_WEIGHTS: weights are given for {sorted(spec)}, but the fused blocks are "
                             f"{names}; give one weight per block.")
        bad = {name: value for name, value in spec.items() if not value > 0}
        if bad:
            raise InputError(f"BLOCK_WEIGHTS: weights must be positive; got {bad}.")
        return {name: float(spec[name]) for name in names}
    if spec == EQUAL:
        return {name: 1.0 for name in names}
    if spec != INVERSE_VARIANCE:
        raise InputError(f"BLOCK_WEIGHTS: '{spec}' is not valid; expected {INVERSE_VARIANCE}, {EQUAL} or "
                         "name=weight pairs.")
    weights, start = {}, 0
    for block in layout:
        width = block["channels"] * block["seasons"]
        variance = float(np.var(train_features[:, start:start + width], axis=0, dtype=np.float64).mean())
        weights[block["name"]] = 1.0 / max(variance, 1e-12)
        start += width
    # Scale so the weights average 1; only their ratios matter to the optimum.
    mean_weight = float(np.mean(list(weights.values())))
    return {name: value / mean_weight for name, value in weights.items()}


def build_modules(input_width: int, config: AutoencoderConfig) -> tuple[Any, Any]:
    """Return the encoder and decoder as ``torch.nn.Sequential`` (initialised from torch's global RNG)."""
    torch = import_optional("torch", "training the autoencoder compressor")
    nn = torch.nn
    encoder = nn.Sequential(
        nn.LayerNorm(input_width, eps=LAYER_NORM_EPSILON),
        nn.Dropout(config.dropout),
        nn.Linear(input_width, config.hidden_width),
        nn.GELU(),
        nn.Dropout(config.dropout),
        nn.Linear(config.hidden_width, config.dimensions),
    )
    decoder = nn.Linear(config.dimensions, input_width)
    return encoder, decoder


def _value_weights(layout: list[dict[str, Any]], block_weights: dict[str, float]) -> np.ndarray:
    """Return one weight per fused value, ``w_block / width_block``.

    Summing ``weight * squared error`` over the values then equals the sum over
    blocks of ``w_block * MSE_block``.
    """
    parts = []
    for block in layout:
        width = block["channels"] * block["seasons"]
        parts.append(np.full(width, block_weights[block["name"]] / width, dtype=np.float32))
    return np.concatenate(parts)


def encode(encoder: Any, features: np.ndarray, device: str) -> np.ndarray:
    """Return the embeddings ``(N, K)`` of fused vectors with the encoder in eval mode."""
    torch = import_optional("torch", "running the autoencoder compressor")
    encoder.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, features.shape[0], _EVAL_BATCH_ROWS):
            batch = torch.from_numpy(np.ascontiguousarray(features[start:start + _EVAL_BATCH_ROWS])).to(device)
            outputs.append(encoder(batch).cpu().numpy())
    return np.concatenate(outputs, axis=0).astype(np.float32)


def _holdout_loss(encoder: Any, decoder: Any, features: np.ndarray, value_weights: Any, device: str) -> float:
    """Return the weighted per-block MSE of the held-out split."""
    torch = import_optional("torch", "training the autoencoder compressor")
    encoder.eval()
    decoder.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, features.shape[0], _EVAL_BATCH_ROWS):
            batch = torch.from_numpy(np.ascontiguousarray(features[start:start + _EVAL_BATCH_ROWS])).to(device)
            error = (decoder(encoder(batch)) - batch) ** 2
            total += float((error * value_weights).sum())
    return total / features.shape[0]


def train_autoencoder(train_features: np.ndarray, holdout_features: np.ndarray, layout: list[dict[str, Any]],
                      config: AutoencoderConfig, block_weights: dict[str, float],
                      proxy: Callable[[np.ndarray, np.ndarray], float], reporter: Reporter,
                      device: str = "cpu") -> TrainedAutoencoder:
    """Train the autoencoder and keep the checkpoint with the best proxy score.

    Args:
        train_features: ``(n_train, D)`` float32 fused vectors to train on.
        holdout_features: ``(n_holdout, D)`` float32 fused vectors for selection.
        layout: Fused blocks; their widths sum to ``D``.
        config: Training settings.
        block_weights: Loss weight per block name.
        proxy: ``(train embeddings, held-out embeddings) → score``, higher is better.
        reporter: Receives progress and checkpoint scores; cancellation is checked every batch.
        device: ``"cpu"`` or ``"cuda"``.

    Returns:
        The chosen encoder and the record of every checkpoint.

    Raises:
        RunCancelledError: If the reporter is cancelled.
    """
    torch = import_optional("torch", "training the autoencoder compressor")
    samples, width = train_features.shape
    batch_size = min(config.batch_size, samples)
    # Whole batches only (drop_last), as the reference training does.
    steps_per_epoch = samples // batch_size
    total_steps = steps_per_epoch * config.epochs
    milestones = [int(0.6 * total_steps), int(0.9 * total_steps)]
    checkpoint_epochs = set(config.checkpoint_epochs())
    # NOTE: training on CUDA has the same code path but is not covered by the tests, which run on the CPU.
    deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if device == "cpu":
            torch.use_deterministic_algorithms(True)
        try:
            encoder, decoder = build_modules(width, config)
            encoder.to(device)
            decoder.to(device)
            value_weights = torch.from_numpy(_value_weights(layout, block_weights)).to(device)
            optimiser = torch.optim.AdamW(list(encoder.parameters()) + list(decoder.parameters()),
                                          lr=config.learning_rate, weight_decay=config.weight_decay)
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, milestones=milestones, gamma=0.1)
            shuffler = np.random.default_rng(config.seed)
            checkpoints: list[Checkpoint] = []
            best_state: dict[str, np.ndarray] | None = None
            best: Checkpoint | None = None
            step = 0
            for epoch in range(1, config.epochs + 1):
                encoder.train()
                decoder.train()
                order = shuffler.permutation(samples)
                losses = []
                for batch_index in range(steps_per_epoch):
                    if reporter.is_canceled():
                        raise RunCancelledError(f"Training cancelled in epoch {epoch}; no compressor was "
                                                "written.")
                    rows = np.sort(order[batch_index * batch_size:(batch_index + 1) * batch_size])
                    batch = torch.from_numpy(train_features[rows]).to(device)
                    error = (decoder(encoder(batch)) - batch) ** 2
                    loss = (error * value_weights).sum(dim=1).mean()
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    scheduler.step()
                    losses.append(float(loss.detach()))
                    step += 1
                    reporter.progress(90.0 * step / total_steps)
                if epoch not in checkpoint_epochs:
                    continue
                point = Checkpoint(
                    epoch=epoch,
                    proxy=float(proxy(encode(encoder, train_features, device),
                                      encode(encoder, holdout_features, device))),
                    holdout_loss=_holdout_loss(encoder, decoder, holdout_features, value_weights, device),
                    train_loss=float(np.mean(losses)),
                )
                checkpoints.append(point)
                reporter.info(f"Epoch {epoch}/{config.epochs}: held-out loss {point.holdout_loss:.6g}, "
                              f"proxy {point.proxy:.4f}.")
                # Strictly better only: on a tie, the earlier (less trained) checkpoint stays.
                if best is None or point.proxy > best.proxy:
                    best = point
                    best_state = {name: value.detach().cpu().numpy().copy()
                                  for name, value in encoder.state_dict().items()}
        finally:
            torch.use_deterministic_algorithms(deterministic)
    if best is None or best_state is None:
        raise InputError(f"EPOCHS: {config.epochs}; expected 1 or more.")
    return TrainedAutoencoder(best_state, width, config, checkpoints, best.epoch, dict(block_weights))


def encoder_from_state(trained: TrainedAutoencoder) -> Any:
    """Rebuild the chosen encoder as a torch module on the CPU, in eval mode."""
    torch = import_optional("torch", "running the autoencoder compressor")
    encoder, _ = build_modules(trained.input_width, trained.config)
    encoder.load_state_dict({name: torch.from_numpy(value) for name, value in trained.encoder_state.items()})
    encoder.eval()
    return encoder


@dataclass
class Conditioning:
    """An affine map ``(z - mean) @ matrix`` applied to the encoder output.

    Attributes:
        name: ``as_trained``, ``pca_rotated`` or ``whitened``.
        mean: ``(K,)`` training-embedding mean, or None for ``as_trained``.
        matrix: ``(K, K)`` rotation (scaled for whitening), or None for ``as_trained``.
    """

    name: str
    mean: np.ndarray | None = None
    matrix: np.ndarray | None = None

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        """Return the conditioned embeddings (float32, computed as the ONNX graph does)."""
        if self.mean is None or self.matrix is None:
            return embeddings
        return ((embeddings - self.mean) @ self.matrix).astype(np.float32)


def fit_conditioning(name: str, train_embeddings: np.ndarray) -> Conditioning:
    """Fit an output conditioning on the training-split embeddings of the chosen encoder.

    ``pca_rotated`` centres and rotates onto the principal axes (largest
    variance first, each axis signed so its largest loading is positive);
    ``whitened`` also divides every axis by its standard deviation.

    Raises:
        InputError: If ``name`` is not a known conditioning.
    """
    if name not in CONDITIONINGS:
        raise InputError(f"OUTPUT_CONDITIONING: '{name}' is not valid; expected one of {', '.join(CONDITIONINGS)}.")
    if name == AS_TRAINED:
        return Conditioning(AS_TRAINED)
    values = train_embeddings.astype(np.float64)
    mean = values.mean(axis=0)
    covariance = np.cov(values - mean, rowvar=False).reshape(values.shape[1], values.shape[1])
    eigenvalues, vectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = np.clip(eigenvalues[order], 0.0, None), vectors[:, order]
    signs = np.sign(vectors[np.argmax(np.abs(vectors), axis=0), np.arange(vectors.shape[1])])
    vectors = vectors * np.where(signs == 0, 1.0, signs)
    if name == WHITENED:
        floor = max(float(eigenvalues[0]) * WHITENING_FLOOR, 1e-12)
        vectors = vectors / np.sqrt(np.maximum(eigenvalues, floor))[None, :]
    return Conditioning(name, mean.astype(np.float32), vectors.astype(np.float32))


def export_onnx(trained: TrainedAutoencoder, conditioning: Conditioning, layout: list[dict[str, Any]],
                summary: dict[str, Any], normalisation: dict[str, Any], features_sha256: str,
                encoder_fingerprint: str) -> bytes:
    """Build the chosen encoder plus its output conditioning as an ONNX model.

    The graph is ``LayerNormalization → MatMul/Add → GELU (erf form) →
    MatMul/Add → [Sub/MatMul]``, with input ``features [N, D]`` and output
    ``embedding [N, K]``; dropout is absent because it is the identity at
    inference.

    Args:
        trained: The trained encoder.
        conditioning: Output conditioning baked into the graph.
        layout: Fused layout, stored as ``fusedeo_layout``.
        summary: Training summary, stored as ``fusedeo_summary``.
        normalisation: Input normalisation and output conditioning, stored as ``fusedeo_normalisation``.
        features_sha256: Hash of the training features, stored as ``fusedeo_training_features_sha256``.
        encoder_fingerprint: Fingerprint of the encoders and fitted parts that made the training features,
            stored as ``fusedeo_encoder_fingerprint`` so that embedding runs with other parts are rejected.

    Returns:
        The serialised model.
    """
    onnx = import_optional("onnx", "exporting the autoencoder compressor")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    state = trained.encoder_state
    # Sequential indices: 0 LayerNorm, 2 first Linear, 5 second Linear.
    arrays = {
        "ln_scale": state["0.weight"],
        "ln_bias": state["0.bias"],
        "hidden_weight": np.ascontiguousarray(state["2.weight"].T),
        "hidden_bias": state["2.bias"],
        "output_weight": np.ascontiguousarray(state["5.weight"].T),
        "output_bias": state["5.bias"],
        "inverse_sqrt2": np.array(1.0 / np.sqrt(2.0), dtype=np.float32),
        "one": np.array(1.0, dtype=np.float32),
        "half": np.array(0.5, dtype=np.float32),
    }
    nodes = [
        helper.make_node("LayerNormalization", [INPUT_NAME, "ln_scale", "ln_bias"], ["normalised"],
                         axis=-1, epsilon=LAYER_NORM_EPSILON),
        helper.make_node("MatMul", ["normalised", "hidden_weight"], ["hidden_product"]),
        helper.make_node("Add", ["hidden_product", "hidden_bias"], ["hidden"]),
        # Exact GELU: 0.5 · x · (1 + erf(x / √2)), as torch.nn.GELU() computes it.
        helper.make_node("Mul", ["hidden", "inverse_sqrt2"], ["hidden_scaled"]),
        helper.make_node("Erf", ["hidden_scaled"], ["hidden_erf"]),
        helper.make_node("Add", ["hidden_erf", "one"], ["hidden_gate"]),
        helper.make_node("Mul", ["hidden", "hidden_gate"], ["hidden_gated"]),
        helper.make_node("Mul", ["hidden_gated", "half"], ["activated"]),
        helper.make_node("MatMul", ["activated", "output_weight"], ["output_product"]),
    ]
    if conditioning.mean is None or conditioning.matrix is None:
        nodes.append(helper.make_node("Add", ["output_product", "output_bias"], [OUTPUT_NAME]))
    else:
        arrays["conditioning_mean"] = conditioning.mean
        arrays["conditioning_matrix"] = conditioning.matrix
        nodes += [
            helper.make_node("Add", ["output_product", "output_bias"], ["code"]),
            helper.make_node("Sub", ["code", "conditioning_mean"], ["code_centred"]),
            helper.make_node("MatMul", ["code_centred", "conditioning_matrix"], [OUTPUT_NAME]),
        ]
    graph = helper.make_graph(
        nodes=nodes,
        name="fusedeo_autoencoder_compressor",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["N", trained.input_width])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT,
                                               ["N", trained.config.dimensions])],
        initializer=[numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)
                     for name, value in arrays.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="FusedEO")
    model.ir_version = 8
    metadata = {
        "fusedeo_kind": KIND,
        "fusedeo_layout": json.dumps(layout),
        "fusedeo_summary": json.dumps(summary),
        "fusedeo_normalisation": json.dumps(normalisation),
        "fusedeo_training_features_sha256": features_sha256,
        "fusedeo_encoder_fingerprint": encoder_fingerprint,
    }
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


def torch_reference(trained: TrainedAutoencoder, conditioning: Conditioning, features: np.ndarray) -> np.ndarray:
    """Return the embeddings that the exported model must reproduce, computed with torch."""
    torch = import_optional("torch", "running the autoencoder compressor")
    encoder = encoder_from_state(trained)
    with torch.no_grad():
        code = encoder(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        if conditioning.mean is not None and conditioning.matrix is not None:
            code = (code - torch.from_numpy(conditioning.mean)) @ torch.from_numpy(conditioning.matrix)
    return code.numpy()
