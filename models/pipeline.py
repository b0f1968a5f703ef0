"""The embedding run behind ``fusedeo:embed``.

Input layers become a season stack on one target grid, which a patch grid
divides into patches. Each encoder turns a patch into its block of the fused
vector (fixed block order); the fused vectors are kept in a memory-mapped
file. The compressor (ONNX; PCA fitted here when none is given) turns them
into the embedding raster, the NeuCo-Bench table and the embedding model file.

The run makes four passes over the patches (validity, kernel fitting where
an encoder needs it, features, output); each reads windows, never whole
rasters, and checks for cancellation per batch.
"""

import csv
import json
import logging
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from osgeo import gdal

from .. import __version__
from ..errors import InputError, LayoutMismatchError, RunCancelledError
from ..raster.bands import SEASONS, SENSOR_BANDS, Sensor
from ..raster.embedding_raster import (
    EMBEDDING_KIND,
    FINGERPRINT_KEY,
    GRID_PIXEL_SIZE_KEY,
    KIND_KEY,
    PATCH_SIZE_KEY,
    PROVENANCE_KEY,
    STRIDE_KEY,
    VERSION_KEY,
    band_description,
)
from ..raster.grid import Bounds, PatchGrid
from ..raster.layers import LayerSpec
from ..raster.stack import SeasonStack, build_season_stack
from ..raster.writer import PendingOutputs, create_float_geotiff, write_rows
from ..reporting import Reporter
from .compressor import OnnxCompressor, fit_pca
from .device import select_torch_device
from .embedding_model import EmbeddingModel
from .feature_store import FeatureStore, encoder_fingerprint
from .encoders import create_encoder, encoder_card, ordered_encoder_names
from .encoders.base import Encoder, PatchSampler
from .weights import WeightStore

logger = logging.getLogger(__name__)

GDAL_CACHE_BYTES = 32 * 1024 * 1024
"""GDAL block cache during an embedding run."""


@dataclass
class EmbedRequest:
    """Everything ``fusedeo:embed`` was asked to do.

    Attributes:
        layers: Input layers (at least one).
        encoders: Encoder names (``ENCODERS``).
        output_path: Embedding raster to write (``OUTPUT``).
        patch_size_px: Patch side in target-grid pixels.
        stride_px: Distance between patches in target-grid pixels.
        min_valid_fraction: Patches with a smaller valid fraction get nodata.
        dimensions: Requested embedding width when PCA is fitted.
        s2_offset: ``auto``, ``with_offset`` or ``without_offset``.
        device: ``auto``, ``cpu`` or ``cuda``.
        compressor_path: ONNX compressor to use, or None to fit PCA.
        embedding_model_path: Embedding model of an earlier run to reuse.
        output_table_path: NeuCo-Bench CSV to write, or None.
        output_model_path: Embedding model file to write, or None.
        output_features_path: Feature store folder to create or append to, or None.
        weights_dir: Weight store folder (``FUSEDEO_WEIGHTS_DIR`` overrides it).
        extent: Optional area to restrict the run to.
        extent_crs_wkt: CRS of ``extent``.
    """

    layers: list[LayerSpec]
    encoders: list[str]
    output_path: str
    patch_size_px: int = 264
    stride_px: int = 264
    min_valid_fraction: float = 0.5
    dimensions: int = 1024
    s2_offset: str = "auto"
    device: str = "auto"
    compressor_path: str | None = None
    embedding_model_path: str | None = None
    output_table_path: str | None = None
    output_model_path: str | None = None
    output_features_path: str | None = None
    weights_dir: str | None = None
    extent: Bounds | None = None
    extent_crs_wkt: str | None = None


@dataclass
class EmbedResult:
    """Outputs and counts of an embedding run."""

    output_path: str
    output_table_path: str | None
    output_model_path: str | None
    fingerprint: str
    dimensions: int
    patches_total: int
    patches_valid: int
    device: str
    providers: list[str] = field(default_factory=list)


def check_request(request: EmbedRequest) -> None:
    """Reject parameter values that make no sense, before any data is read.

    Raises:
        InputError: Naming the parameter, its value and what is expected.
    """
    if request.patch_size_px < 1:
        raise InputError(f"PATCH_SIZE: {request.patch_size_px} pixels; expected 1 or more.")
    if request.stride_px < 1:
        raise InputError(f"STRIDE: {request.stride_px} pixels; expected 1 or more.")
    if not 0.0 < request.min_valid_fraction <= 1.0:
        raise InputError(f"MIN_VALID_FRACTION: {request.min_valid_fraction}; expected a value in (0, 1].")
    if request.dimensions < 1:
        raise InputError(f"DIMENSIONS: {request.dimensions}; expected 1 or more.")
    seen: dict[tuple[str, Sensor], str] = {}
    for spec in request.layers:
        key = (spec.season, spec.sensor)
        if key in seen:
            raise InputError(f"{spec.parameter} and {seen[key]} both give {spec.sensor.value} for {spec.season}.")
        seen[key] = spec.parameter


def _batches(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _Progress:
    """Map the passes of a run onto one 0–100 progress bar and check for cancel."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def update(self, start: float, end: float, done: int, total: int) -> None:
        if self.reporter.is_canceled():
            raise RunCancelledError("The run was cancelled; no output was written.")
        fraction = done / total if total else 1.0
        self.reporter.progress(start + (end - start) * fraction)


def _read_patches(stack: SeasonStack, patches: PatchGrid, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Read the canonical stacks ``(B, T, C, P, P)`` and validity ``(B, T, P, P)`` of patches.

    Patches of one patch row that follow each other are read as one window.
    """
    size = patches.patch_size_px
    stacks, masks = [], []
    position = 0
    while position < len(indices):
        row, col = divmod(indices[position], patches.cols)
        run = 1
        while (position + run < len(indices) and indices[position + run] == indices[position] + run
               and (indices[position] + run) // patches.cols == row):
            run += 1
        top, left = patches.window(row, col)
        width = (run - 1) * patches.stride_px + size
        values, valid = stack.read(top, left, size, width)
        for offset in range(run):
            start = offset * patches.stride_px
            stacks.append(values[..., start:start + size])
            masks.append(valid[..., start:start + size])
        position += run
    return np.stack(stacks), np.stack(masks)


def _valid_fractions(stack: SeasonStack, patches: PatchGrid, progress: _Progress, batch: int) -> np.ndarray:
    """Return the valid fraction of every patch (mean over present seasons)."""
    seasons = [index for index, present in enumerate(stack.seasons_present) if present]
    fractions = np.zeros(patches.count, dtype=np.float64)
    indices = list(range(patches.count))
    for done, chunk in enumerate(_batches(indices, batch)):
        _, valid = _read_patches(stack, patches, chunk)
        fractions[list(chunk)] = valid[:, seasons].mean(axis=(1, 2, 3))
        progress.update(0, 10, (done + 1) * batch, patches.count)
    return fractions


def _make_sampler(stack: SeasonStack, patches: PatchGrid, valid_indices: Sequence[int]) -> PatchSampler:
    """Give encoders lazy access to the valid (patch, season) pairs."""
    seasons = [index for index, present in enumerate(stack.seasons_present) if present]

    def read_window(pair: int, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        patch, season = divmod(pair, len(seasons))
        top, left = patches.window(*divmod(valid_indices[patch], patches.cols))
        values, _ = stack.read(top + row, left + col, rows, cols, season=seasons[season])
        return values[seasons[season]]

    return PatchSampler(len(valid_indices) * len(seasons), (patches.patch_size_px, patches.patch_size_px),
                        read_window, stack.channels_present)


def _checkpoints(names: Sequence[str], weights_dir: str | None, reporter: Reporter) -> dict[str, Path | None]:
    """Return the verified checkpoint of every encoder that has weights.

    All checkpoints are resolved before any model is built, so a missing or
    tampered file is reported before minutes of model loading.
    """
    checkpoints: dict[str, Path | None] = {}
    for name in names:
        card = encoder_card(name)
        if card.weights is None:
            checkpoints[name] = None
            continue
        store = WeightStore(weights_dir, reporter)
        checkpoints[name] = store.resolve(card.weights)
        reporter.info(f"{name}: checkpoint {card.weights.file_name} verified in {store.folder} "
                      f"(licence {card.weights.licence}).")
    return checkpoints


def _weights_record(name: str) -> dict[str, Any]:
    """Return the checkpoint an encoder was loaded from, as verified by the weight store."""
    weights = encoder_card(name).weights
    return {"file": weights.file_name, "sha256": weights.sha256, "url": weights.url, "licence": weights.licence}


def _check_sensors(names: Sequence[str], present: Collection[Sensor]) -> None:
    """Reject encoders whose sensors are missing, before their models are built.

    A Sentinel-2 level in a card counts as satisfied by either level here,
    because several encoders read L1C or L2A; their ``prepare`` decides.
    """
    has_s2 = bool(set(present) & {Sensor.S2L1C, Sensor.S2L2A})
    for name in names:
        card = encoder_card(name)
        missing = [sensor.value for sensor in sorted(card.required_sensors, key=lambda item: item.value)
                   if (sensor is Sensor.S1 and sensor not in present) or (sensor is not Sensor.S1 and not has_s2)]
        if missing:
            raise InputError(f"ENCODERS: {name} needs {', '.join(missing)} layers, but none were given. "
                             f"Add them or remove {name} from ENCODERS.")


def create_encoders(names: Sequence[str], model: EmbeddingModel | None, device: str,
                    sensors_present: Collection[Sensor], weights_dir: str | None,
                    reporter: Reporter) -> list[Encoder]:
    """Create the selected encoders, or rebuild those of an embedding model with its fitted arrays.

    Sensors are checked and checkpoints verified through the weight store
    before any model is built; each encoder's ``prepare`` then picks its
    inputs among the sensors present.

    Args:
        names: Encoder names as given in ``ENCODERS``.
        model: Embedding model to reuse, or None for new encoders.
        device: torch device string.
        sensors_present: Sensors the run provides.
        weights_dir: Weight store folder (``FUSEDEO_WEIGHTS_DIR`` overrides it).
        reporter: Receives the encoders' decisions.

    Returns:
        The encoders in fused-block order.

    Raises:
        InputError: If a name is unknown, none is given or a sensor is missing.
        LayoutMismatchError: If ``names`` differ from the model's encoders.
        MissingFileError: If a checkpoint is not in the weight store.
    """
    ordered = ordered_encoder_names(list(names))
    if model is not None and model.encoder_names != ordered:
        raise LayoutMismatchError(
            f"ENCODERS: {', '.join(ordered)} differs from the encoders of EMBEDDING_MODEL "
            f"({', '.join(model.encoder_names)}). Select the same encoders, or leave EMBEDDING_MODEL "
            "empty to make a new embedding space."
        )
    _check_sensors(ordered, sensors_present)
    checkpoints = _checkpoints(ordered, weights_dir, reporter)
    stored = {entry["name"]: entry["settings"] for entry in model.encoders} if model is not None else {}
    encoders = [create_encoder(name, device=device, checkpoint=checkpoints[name], reporter=reporter,
                               **stored.get(name, {})) for name in ordered]
    for encoder in encoders:
        encoder.prepare(sensors_present, reporter)
        arrays = model.fitted.get(encoder.card.name) if model is not None else None
        if arrays:
            encoder.load_fitted(arrays)
    return encoders


def fit_encoders(encoders: Sequence[Encoder], sampler: PatchSampler, reporter: Reporter) -> None:
    """Fit the run-dependent parts (mosaiks kernels) of the encoders that still need them."""
    for encoder in encoders:
        if encoder.needs_fit:
            encoder.fit(sampler, reporter)


def encode_fused(encoders: Sequence[Encoder], stack: np.ndarray, seasons_present: Sequence[bool]) -> np.ndarray:
    """Return the fused vectors ``(B, D)`` of canonical stacks ``(B, T, 27, H, W)``."""
    return np.concatenate([encoder.encode(stack, seasons_present) for encoder in encoders], axis=1)


def fused_layout(encoders: Sequence[Encoder]) -> list[dict[str, Any]]:
    """Return the fused blocks of ``encoders`` as dicts, in order."""
    return [encoder.block().to_json() for encoder in encoders]


def build_embedding_model(encoders: Sequence[Encoder], compressor: OnnxCompressor,
                          compressor_summary: dict[str, Any]) -> EmbeddingModel:
    """Collect encoders, settings, fitted arrays and compressor into an embedding model."""
    return EmbeddingModel(
        encoders=[{"name": encoder.card.name, "settings": encoder.settings()} for encoder in encoders],
        layout=fused_layout(encoders),
        fitted={encoder.card.name: encoder.fitted_arrays() for encoder in encoders if encoder.fitted_arrays()},
        compressor=compressor.model_bytes,
        compressor_summary=compressor_summary,
    )


def select_compressor(model: EmbeddingModel | None, compressor: OnnxCompressor | None,
                      compressor_path: str | None, dimensions: int, features: np.ndarray | None,
                      layout: list[dict[str, Any]], device: str, reporter: Reporter,
                      unit: str = "valid patches",
                      remedy: str = "a larger area, a smaller PATCH_SIZE or STRIDE, or a lower MIN_VALID_FRACTION",
                      ) -> tuple[OnnxCompressor, dict[str, Any]]:
    """Return the given compressor file, the embedding model's compressor, or PCA fitted on ``features``.

    A given file wins over the embedding model's compressor, so that a
    compressor trained on features of that model's encoders can replace it.

    Args:
        model: Embedding model of an earlier run, or None.
        compressor: Compressor loaded from ``compressor_path``, or None.
        compressor_path: The ``COMPRESSOR`` file, recorded in the summary.
        dimensions: Requested PCA width (``DIMENSIONS``).
        features: Fused vectors ``(N, D)`` to fit PCA on; only read when
            neither a model nor a compressor is given.
        layout: Fused layout of this run.
        device: Device the compressor should run on.
        reporter: Receives the PCA decisions.
        unit: What the rows of ``features`` are, for messages.
        remedy: How to get more rows, for the message when there are too few.

    Raises:
        LayoutMismatchError: If a given compressor was made for another layout.
        InputError: If PCA needs more rows than ``features`` has.
    """
    if compressor is not None:
        compressor.check_layout(layout)
        return compressor, {"kind": compressor.kind, "source": str(compressor_path),
                            "input_width": compressor.input_width, "output_width": compressor.output_width}
    if model is not None:
        loaded = OnnxCompressor(model.compressor, "EMBEDDING_MODEL compressor", device)
        loaded.check_layout(layout)
        return loaded, model.compressor_summary
    if features is None:
        raise InputError("PCA needs fused vectors to fit on; give a COMPRESSOR or an EMBEDDING_MODEL.")
    samples, width = features.shape
    components = min(dimensions, samples - 1, width)
    if components < 1:
        raise InputError(f"PCA needs at least 2 {unit}; this run has {samples}. Give a COMPRESSOR, {remedy}.")
    if components < dimensions:
        reporter.warning(f"DIMENSIONS={dimensions} capped to {components}: PCA on {samples} {unit} "
                         f"of width {width} has at most {components} components.")
    model_bytes, summary = fit_pca(features, components, layout)
    reporter.info(f"PCA fitted on {samples} {unit}: {components} components explain "
                  f"{100 * summary['explained_variance_ratio_total']:.1f} % of the variance.")
    return OnnxCompressor(model_bytes, "PCA fitted on this run", device), summary


def _build_encoders(request: EmbedRequest, model: EmbeddingModel | None, stack: SeasonStack, device: str,
                    reporter: Reporter) -> list[Encoder]:
    """Create the selected encoders, or those of the embedding model, and check their inputs."""
    present = stack.sensors_present()
    encoders = create_encoders(request.encoders, model, device, present, request.weights_dir, reporter)
    for encoder in encoders:
        channels = encoder.settings().get("channels")
        if model is not None and channels:
            provided = {f"{item.layer.spec.sensor.value}:{band}" for item in stack.layers
                        for band in SENSOR_BANDS[item.layer.spec.sensor]}
            absent = [name for name in channels if name not in provided]
            if absent:
                sentence = (f"{encoder.card.name}: channels {', '.join(absent)} of the embedding model are not in "
                            "this run's layers; they are filled with zeros after normalisation.")
                stack.decisions.append(sentence)
                reporter.warning(sentence)
    return encoders


def _summary(request: EmbedRequest, stack: SeasonStack, patches: PatchGrid, encoders: Sequence[Encoder],
             reporter: Reporter) -> None:
    """Report what the run is about to do."""
    if request.stride_px > request.patch_size_px:
        sentence = (f"STRIDE={request.stride_px} px is larger than PATCH_SIZE={request.patch_size_px} px: only "
                    f"{100 * (request.patch_size_px / request.stride_px) ** 2:.0f} % of the area is encoded, and "
                    "each output pixel describes only its top-left patch.")
        stack.decisions.append(sentence)
        reporter.warning(sentence)
    for season_index, season in enumerate(SEASONS):
        sensors = [item.layer.spec.sensor.value for item in stack.layers if item.season_index == season_index]
        reporter.info(f"Season {season}: {', '.join(sensors) if sensors else 'no layer'}.")
    grid = stack.grid
    reporter.info(
        f"Patch grid: {patches.rows} x {patches.cols} = {patches.count} patches of {patches.patch_size_px} px "
        f"every {patches.stride_px} px on a {grid.width} x {grid.height} px grid of {grid.pixel_size:g} m; "
        f"output raster {patches.cols} x {patches.rows} px of {patches.stride_px * grid.pixel_size:g} m."
    )
    width = sum(encoder.block().width for encoder in encoders)
    reporter.info(f"Encoders: {', '.join(encoder.card.name for encoder in encoders)}; fused width {width}.")
    scratch_mib = patches.count * width * 4 / 2**20
    if request.compressor_path or request.embedding_model_path:
        reporter.info(f"Output: {patches.cols} x {patches.rows} px, one band per compressor output; "
                      f"feature scratch file up to {scratch_mib:.1f} MiB.")
    else:
        output_mib = patches.count * request.dimensions * 4 / 2**20
        reporter.info(f"Output: {patches.cols} x {patches.rows} px with up to {request.dimensions} bands, "
                      f"up to {output_mib:.1f} MiB before compression; feature scratch file up to "
                      f"{scratch_mib:.1f} MiB.")


def run_embedding(request: EmbedRequest, reporter: Reporter) -> EmbedResult:
    """Compute the embedding raster (and optional table and model) of ``request``.

    Args:
        request: The run's parameters.
        reporter: Receives decisions, progress and cancellation.

    Returns:
        What was written.

    Raises:
        PluginError: On any invalid input; nothing is written then.
        RunCancelledError: If the user cancelled; nothing is written then.
    """
    check_request(request)
    started = time.perf_counter()
    device = select_torch_device(request.device, reporter)
    model = EmbeddingModel.load(request.embedding_model_path) if request.embedding_model_path else None
    compressor = None
    if request.compressor_path:
        compressor = OnnxCompressor.from_file(request.compressor_path, device)
    stack = build_season_stack(request.layers, request.s2_offset, request.patch_size_px, request.stride_px,
                               reporter, request.extent, request.extent_crs_wkt)
    patches = PatchGrid(stack.grid, request.patch_size_px, request.stride_px)
    encoders = _build_encoders(request, model, stack, device, reporter)
    if (compressor is not None and model is None and "fusedeo_encoder_fingerprint" in compressor.metadata
            and any(encoder.needs_fit for encoder in encoders)):
        raise LayoutMismatchError(
            f"COMPRESSOR: '{compressor.source}' was trained on features of fitted encoder parts "
            f"{compressor.metadata['fusedeo_encoder_fingerprint'][:16]}, but this run would draw new mosaiks "
            "kernels. Set EMBEDDING_MODEL to the embedding model whose feature stores trained the compressor."
        )
    _summary(request, stack, patches, encoders, reporter)
    progress = _Progress(reporter)
    pending = PendingOutputs()
    # GDAL's block cache (5 % of RAM by default) would otherwise grow with the
    # area read. Each pass reads a patch once, so a small cache is enough.
    cache_bytes = gdal.GetCacheMax()
    gdal.SetCacheMax(min(cache_bytes, GDAL_CACHE_BYTES))
    try:
        with tempfile.TemporaryDirectory(prefix="fusedeo-features-") as scratch:
            result = _run(request, stack, patches, encoders, model, compressor, device, progress, pending,
                          Path(scratch), reporter)
        pending.commit()
    except BaseException:
        pending.discard()
        raise
    finally:
        stack.close()
        gdal.SetCacheMax(cache_bytes)
    reporter.debug(f"Embedding run took {time.perf_counter() - started:.1f} s.")
    return result


def _run(request: EmbedRequest, stack: SeasonStack, patches: PatchGrid, encoders: list[Encoder],
         model: EmbeddingModel | None, compressor: OnnxCompressor | None, device: str, progress: _Progress,
         pending: PendingOutputs, scratch: Path, reporter: Reporter) -> EmbedResult:
    """Run the passes of an embedding run; outputs go to ``pending``."""
    output_path = pending.add(request.output_path)
    table_path = pending.add(request.output_table_path) if request.output_table_path else None
    model_path = pending.add(request.output_model_path) if request.output_model_path else None
    batch = max(1, min(encoder.preferred_batch_size() for encoder in encoders))

    # Validity first: invalid patches must stay out of kernel sampling and PCA fitting.
    fractions = _valid_fractions(stack, patches, progress, batch)
    valid_indices = [int(index) for index in np.flatnonzero(fractions >= request.min_valid_fraction)]
    skipped = patches.count - len(valid_indices)
    if skipped:
        reporter.warning(f"{skipped} of {patches.count} patches have a valid fraction below "
                         f"MIN_VALID_FRACTION={request.min_valid_fraction:g}; they are nodata in the output.")
    if not valid_indices:
        raise InputError(f"No patch has a valid fraction of at least MIN_VALID_FRACTION="
                         f"{request.min_valid_fraction:g} (best: {fractions.max():.2f}). Lower "
                         "MIN_VALID_FRACTION or give layers with fewer nodata pixels.")

    # Encoders with run-dependent parts (mosaiks kernels) fit them on valid patches only.
    sampler = _make_sampler(stack, patches, valid_indices)
    fit_encoders(encoders, sampler, reporter)
    progress.update(10, 15, 1, 1)
    if compressor is not None:
        # Checked before encoding, which can take hours with foundation models on a CPU.
        settings = [{"name": encoder.card.name, "settings": encoder.settings()} for encoder in encoders]
        fitted = {encoder.card.name: encoder.fitted_arrays() for encoder in encoders if encoder.fitted_arrays()}
        compressor.check_encoder_fingerprint(encoder_fingerprint(settings, fused_layout(encoders), fitted))

    # Fused vectors of the valid patches go to a memory-mapped scratch file.
    layout = fused_layout(encoders)
    width = sum(encoder.block().width for encoder in encoders)
    features = np.lib.format.open_memmap(scratch / "features.npy", mode="w+", dtype=np.float32,
                                         shape=(len(valid_indices), width))
    reporter.info(f"Encoding {len(valid_indices)} valid patches in batches of {batch}.")
    started = time.perf_counter()
    for done, chunk in enumerate(_batches(valid_indices, batch)):
        values, _ = _read_patches(stack, patches, chunk)
        start = done * batch
        features[start:start + len(chunk)] = encode_fused(encoders, values, stack.seasons_present)
        if done == 0 and len(valid_indices) > len(chunk):
            # The first batch calibrates the estimate: reading and all forward passes included.
            seconds = (time.perf_counter() - started) / len(chunk) * len(valid_indices)
            reporter.info(f"Estimated encoding time: {seconds / 60:.1f} min ({seconds / len(valid_indices):.2f} s "
                          "per patch, measured on the first batch).")
        progress.update(15, 85, start + len(chunk), len(valid_indices))
    features.flush()
    if not np.all(np.isfinite(features)):
        raise InputError("An encoder produced non-finite features; the inputs contain values the encoders "
                         "cannot handle. Check the layers' units and nodata values.")

    compressor, compressor_summary = _compressor_for(request, model, compressor, features, layout, device,
                                                     reporter)
    compressor.report_providers(reporter)
    if device == "cuda" and compressor.providers[0] != "CUDAExecutionProvider":
        reporter.warning("onnxruntime has no CUDA execution provider here; the compressor runs on the CPU.")
    embedding_model = build_embedding_model(encoders, compressor, compressor_summary)
    fingerprint = embedding_model.fingerprint
    fitted_fingerprint = encoder_fingerprint(embedding_model.encoders, layout, embedding_model.fitted)
    if compressor is not None:
        compressor.check_encoder_fingerprint(fitted_fingerprint)
    # Compare the encoder side only: a COMPRESSOR file replaces the model's compressor.
    if model is not None and fitted_fingerprint != encoder_fingerprint(model.encoders, model.layout, model.fitted):
        raise LayoutMismatchError("EMBEDDING_MODEL: the rebuilt encoders do not reproduce the model's "
                                  "fingerprint; the file may come from another FusedEO version.")

    provenance = {
        "fusedeo_version": __version__,
        "encoders": embedding_model.encoders,
        "layout": layout,
        "compressor": dict(compressor_summary, sha256=embedding_model.compressor_sha256,
                           execution_provider=compressor.providers[0]),
        "embedding_fingerprint": fingerprint,
        "encoder_fingerprint": fitted_fingerprint,
        "weights": {encoder.card.name: _weights_record(encoder.card.name) for encoder in encoders
                    if encoder_card(encoder.card.name).weights is not None},
        "embedding_model_source": request.embedding_model_path,
        "inputs": [item.layer.to_json() for item in stack.layers],
        "seasons": [season for season, present in zip(SEASONS, stack.seasons_present) if present],
        "s2_offset": request.s2_offset,
        "patch_size_px": request.patch_size_px,
        "stride_px": request.stride_px,
        "min_valid_fraction": request.min_valid_fraction,
        "grid": stack.grid.to_json(),
        "device": device,
        "patches": {"total": patches.count, "valid": len(valid_indices), "skipped": skipped},
        "decisions": stack.decisions,
    }
    _write_outputs(output_path, table_path, patches, valid_indices, features, compressor, fingerprint,
                   provenance, progress)
    if request.output_features_path:
        store = FeatureStore.create_or_append(request.output_features_path, embedding_model.encoders, layout,
                                              fitted_fingerprint)
        stem = Path(request.output_path).stem
        ids = [f"{stem}/{index // patches.cols}_{index % patches.cols}" for index in valid_indices]
        store.append(ids, features, {"output": request.output_path, "inputs": provenance["inputs"],
                                     "grid": provenance["grid"], "patch_size_px": request.patch_size_px,
                                     "stride_px": request.stride_px, "fusedeo_version": __version__})
        reporter.info(f"Feature store {request.output_features_path}: appended {len(ids)} fused vectors "
                      f"(now {len(store)}).")
    if model_path is not None:
        embedding_model.save(model_path)
        reporter.info(f"Embedding model (fingerprint {fingerprint[:16]}, fitted encoder parts "
                      f"{fitted_fingerprint[:16]}) saved; reuse it as EMBEDDING_MODEL to embed other areas in the "
                      "same embedding space. Compressors and feature stores name the fitted encoder parts.")
    return EmbedResult(request.output_path, request.output_table_path, request.output_model_path, fingerprint,
                       compressor.output_width, patches.count, len(valid_indices), device, compressor.providers)


def _compressor_for(request: EmbedRequest, model: EmbeddingModel | None, compressor: OnnxCompressor | None,
                    features: np.ndarray, layout: list[dict[str, Any]], device: str,
                    reporter: Reporter) -> tuple[OnnxCompressor, dict[str, Any]]:
    """Return the compressor of the embedding model, the given file, or PCA fitted on ``features``."""
    return select_compressor(model, compressor, request.compressor_path, request.dimensions, features, layout,
                             device, reporter)


def _write_outputs(output_path: Path, table_path: Path | None, patches: PatchGrid, valid_indices: list[int],
                   features: np.ndarray, compressor: OnnxCompressor, fingerprint: str,
                   provenance: dict[str, Any], progress: _Progress) -> None:
    """Compress the fused vectors and write the embedding raster and table row by row."""
    dimensions = compressor.output_width
    raster = create_float_geotiff(output_path, patches.cols, patches.rows, dimensions,
                                  patches.output_geotransform, patches.grid.crs_wkt)
    for index in range(dimensions):
        raster.GetRasterBand(index + 1).SetDescription(band_description(index))
    raster.SetMetadata({
        KIND_KEY: EMBEDDING_KIND,
        VERSION_KEY: __version__,
        FINGERPRINT_KEY: fingerprint,
        PATCH_SIZE_KEY: str(patches.patch_size_px),
        STRIDE_KEY: str(patches.stride_px),
        GRID_PIXEL_SIZE_KEY: repr(patches.grid.pixel_size),
        PROVENANCE_KEY: json.dumps(provenance, sort_keys=True),
    })
    table_file = open(table_path, "w", newline="") if table_path is not None else None  # noqa: SIM115
    try:
        writer = csv.writer(table_file) if table_file is not None else None
        if writer is not None:
            writer.writerow(["id", *[str(index) for index in range(dimensions)]])
        position = {patch: row for row, patch in enumerate(valid_indices)}
        for patch_row in range(patches.rows):
            values = np.full((1, patches.cols, dimensions), np.nan, dtype=np.float32)
            members = [(col, position[patch_row * patches.cols + col]) for col in range(patches.cols)
                       if patch_row * patches.cols + col in position]
            if members:
                rows = [row for _, row in members]
                embedded = compressor.compress(np.asarray(features[rows[0]:rows[-1] + 1]))
                for col, row in members:
                    values[0, col] = embedded[row - rows[0]]
                    if writer is not None:
                        writer.writerow([f"{patch_row}_{col}", *(f"{value:.7g}" for value in embedded[row - rows[0]])])
            write_rows(raster, patch_row, values)
            progress.update(85, 100, patch_row + 1, patches.rows)
        raster.FlushCache()
    finally:
        raster = None
        if table_file is not None:
            table_file.close()
