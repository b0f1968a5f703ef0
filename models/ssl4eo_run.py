"""The dataset run behind ``fusedeo:embedssl4eo``: SSL4EO-S12 zarr.zip cubes → NeuCo-Bench CSV.

Every sample of a dataset folder (see :mod:`fusedeo.raster.ssl4eo`) is read
as the canonical season stack and goes through the same encoders, fusion and
compressor functions as ``fusedeo:embed`` (:mod:`fusedeo.models.pipeline`).

Outputs next to ``OUTPUT_CSV``:

- the CSV: ``id`` (archive name without ``.zarr.zip``), columns ``0`` …
  ``N-1`` as float32 text, one row per embedded sample, sorted by id;
- ``<name>.exclude.txt``: the skipped ids, one per line (the exclude-file
  format of NeuCo-Bench);
- ``<name>.provenance.json``: encoders, compressor, fingerprints, S2 offset,
  filled bands and the reason for every skipped id.

Two kinds of run:

- *Fixed embedding space* (``EMBEDDING_MODEL``, or ``COMPRESSOR`` with
  encoders that fit nothing): each sample's embedding depends only on that
  sample, so rows are appended and flushed per batch. A rerun on the same
  ``OUTPUT_CSV`` keeps the rows already written, when the provenance file
  records the same fingerprint and S2 offset, and embeds the rest, so an
  interrupted or cancelled run resumes. Skipped ids are tried again.
- *Fitting run* (mosaiks kernels and/or PCA fitted on this dataset): every
  sample enters the fit, so no row is final before all samples are read. The
  run writes its outputs only at the end and leaves nothing when cancelled.
  It does not resume; to make a large dataset resumable, fit once with
  ``OUTPUT_EMBEDDING_MODEL`` and rerun with that file as ``EMBEDDING_MODEL``.
"""

import argparse
import csv
import logging
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .. import __version__
from ..errors import ArchiveError, InputError, LayoutMismatchError, PluginError, RunCancelledError
from ..raster.bands import SEASONS, STACK_CHANNELS, Sensor
from ..raster.ssl4eo import (
    MODALITY_FOLDERS,
    SSL4EO_OFFSET_CHOICES,
    SampleStack,
    Ssl4eoDataset,
    Ssl4eoSample,
    read_sample,
    scan_dataset,
)
from ..raster.writer import PendingOutputs
from ..reporting import LoggingReporter, Reporter
from .compressor import OnnxCompressor
from .device import DEVICE_CHOICES, select_torch_device
from .embedding_model import EmbeddingModel
from .encoders import ENCODER_NAMES
from .encoders.base import Encoder, PatchSampler
from .feature_store import FeatureStore, encoder_fingerprint
from .neuco_csv import (
    exclude_path_for,
    format_row,
    provenance_path_for,
    read_resume_state,
    sort_rows_by_id,
    write_exclude,
    write_json,
)
from .pipeline import (
    build_embedding_model,
    create_encoders,
    encode_fused,
    fit_encoders,
    fused_layout,
    select_compressor,
)

logger = logging.getLogger(__name__)

PROVENANCE_FORMAT = "fusedeo-ssl4eo-run"
SEASONS_PRESENT = (True,) * len(SEASONS)
"""Every archive contains all four seasons, so every season counts as present."""

_SAMPLE_CACHE_SIZE = 8
"""Decoded (sample, season) pairs kept while drawing kernels (about 7.5 MB each at 264 x 264)."""

_FEATURE_FLUSH_ROWS = 1024
"""Fused vectors a resumable run collects before appending them to the feature store."""


@dataclass
class Ssl4eoRequest:
    """Everything ``fusedeo:embedssl4eo`` was asked to do.

    Attributes:
        dataset_folder: Folder with ``s1``, ``s2l1c``, ``s2l2a`` subfolders.
        encoders: Encoder names (``ENCODERS``).
        output_csv: NeuCo-Bench CSV to write or resume.
        dimensions: PCA width when PCA is fitted on this run.
        s2_offset: ``without_offset`` (downstream and challenge data) or
            ``with_offset`` (SSL4EO-S12 v1.1).
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Samples per encoder call; 0 takes the encoders' preference.
        compressor_path: ONNX compressor, or None.
        embedding_model_path: Embedding model of an earlier run, or None.
        output_model_path: Embedding model file to write, or None.
        output_features_path: Feature store folder to create or append to, or None.
        weights_dir: Weight store folder (``FUSEDEO_WEIGHTS_DIR`` overrides it).
    """

    dataset_folder: str
    encoders: list[str]
    output_csv: str
    dimensions: int = 1024
    s2_offset: str = "without_offset"
    device: str = "auto"
    batch_size: int = 0
    compressor_path: str | None = None
    embedding_model_path: str | None = None
    output_model_path: str | None = None
    output_features_path: str | None = None
    weights_dir: str | None = None


@dataclass
class Ssl4eoResult:
    """Output paths and counts of a dataset run."""

    output_csv: str
    exclude_path: str
    provenance_path: str
    output_model_path: str | None
    fingerprint: str
    dimensions: int
    samples_total: int
    rows_written: int
    rows_resumed: int
    skipped: dict[str, str] = field(default_factory=dict)
    resumable: bool = False


def check_request(request: Ssl4eoRequest) -> None:
    """Reject parameter values that make no sense, before any data is read.

    Raises:
        InputError: Naming the parameter, its value and what is expected.
    """
    if request.dimensions < 1:
        raise InputError(f"DIMENSIONS: {request.dimensions}; expected 1 or more.")
    if request.batch_size < 0:
        raise InputError(f"BATCH_SIZE: {request.batch_size}; expected 0 (the encoders' preference) or more.")
    if request.s2_offset not in SSL4EO_OFFSET_CHOICES:
        raise InputError(f"S2_OFFSET: '{request.s2_offset}' is not valid for a dataset folder; expected "
                         f"{' or '.join(SSL4EO_OFFSET_CHOICES)} (without_offset for SSL4EO-S12-downstream "
                         "and the challenge data, with_offset for SSL4EO-S12 v1.1).")
    if not request.output_csv.lower().endswith(".csv"):
        raise InputError(f"OUTPUT_CSV: '{request.output_csv}' does not end in .csv; NeuCo-Bench reads CSV files.")


def modalities_to_read(encoders: Sequence[Encoder], dataset: Ssl4eoDataset,
                       reporter: Reporter) -> tuple[Sensor, ...]:
    """Decide which modalities every sample must have.

    An encoder needs its required sensors, and reads the sensors of its
    channels (``channels`` setting, when fixed by an embedding model) or of
    its model card. A modality the dataset folder lacks is an error when an
    encoder requires it, and otherwise filled (zero after normalisation) with
    a warning. Every modality read is needed per sample, so that no sample is
    embedded with fewer inputs than the others.

    Raises:
        InputError: If a required modality folder is missing.
    """
    present = set(dataset.modalities)
    read: set[Sensor] = set()
    for encoder in encoders:
        missing = sorted(sensor.value for sensor in encoder.card.required_sensors if sensor not in present)
        if missing:
            raise InputError(
                f"ENCODERS: {encoder.card.name} needs {', '.join(missing)}, but DATASET_FOLDER "
                f"'{dataset.root}' has no {', '.join(missing)} folder. Add it or remove "
                f"{encoder.card.name} from ENCODERS."
            )
        channels = encoder.settings().get("channels")
        if channels:
            used = {Sensor(name.split(":", 1)[0]) for name in channels}
        else:
            used = {sensor for sensor, _ in encoder.card.inputs}
        absent = sorted(sensor.value for sensor in used - present)
        if absent and channels:
            reporter.warning(f"{encoder.card.name}: the embedding model uses {', '.join(absent)} channels, "
                             f"but DATASET_FOLDER has no {', '.join(absent)} folder; they are filled with "
                             "zeros after normalisation.")
        read |= used & present
    return tuple(sensor for sensor in MODALITY_FOLDERS if sensor in read)


def _split_samples(dataset: Ssl4eoDataset, sensors: Sequence[Sensor]) -> tuple[list[Ssl4eoSample], dict[str, str]]:
    """Return the samples that have every modality to read, and the skipped ids with reasons."""
    candidates, skipped = [], {}
    for sample in dataset.samples:
        if sample.id in dataset.duplicates:
            places = ", ".join(str(path) for path in dataset.duplicates[sample.id])
            skipped[sample.id] = f"the id occurs more than once in one modality ({places})"
            continue
        missing = [MODALITY_FOLDERS[sensor] for sensor in sensors if sensor not in sample.paths]
        if missing:
            skipped[sample.id] = f"no {', '.join(missing)} archive"
            continue
        candidates.append(sample)
    return candidates, skipped


class _Progress:
    """One 0–100 progress bar over the passes of a run, with a cancel check per sample."""

    def __init__(self, reporter: Reporter, cancel_message: str) -> None:
        self.reporter = reporter
        self.cancel_message = cancel_message

    def update(self, start: float, end: float, done: int, total: int) -> None:
        if self.reporter.is_canceled():
            raise RunCancelledError(self.cancel_message)
        fraction = done / total if total else 1.0
        self.reporter.progress(start + (end - start) * fraction)


class _FilledBands:
    """Count the bands the reader filled with NaN, per modality and band set, for one report."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, tuple[str, ...]], int] = {}
        self.per_band: dict[tuple[str, str], int] = {}

    def add(self, stack: SampleStack) -> None:
        for kind, bands_by_sensor in (("missing", stack.filled_bands), ("nodata only", stack.empty_bands)):
            for sensor, bands in bands_by_sensor.items():
                key = (sensor.value, kind, tuple(bands))
                self.counts[key] = self.counts.get(key, 0) + 1
        for sensor, bands in stack.filled_bands.items():
            for band in bands:
                self.per_band[(sensor.value, band)] = self.per_band.get((sensor.value, band), 0) + 1

    def sentences(self) -> list[str]:
        return [f"{modality}: band(s) {', '.join(bands)} {kind} in {count} sample(s); filled with NaN, which "
                "every encoder replaces with the band's normalisation mean (zero after normalisation)."
                for (modality, kind, bands), count in sorted(self.counts.items())]


def _read_or_skip(sample: Ssl4eoSample, sensors: Sequence[Sensor], s2_offset: str, shape: list[tuple[int, int]],
                  skipped: dict[str, str], reporter: Reporter) -> SampleStack | None:
    """Read a sample; report and record it as skipped when its archives are unusable.

    ``shape`` contains the sample size of the run once the first sample is
    read. A sample of another size is skipped, because a batch needs one size.
    """
    try:
        stack = read_sample(sample, sensors, s2_offset)
    except ArchiveError as err:
        skipped[sample.id] = str(err)
        reporter.warning(f"Sample '{sample.id}' skipped: {err}")
        return None
    size = stack.values.shape[2:]
    if not shape:
        shape.append(size)
    elif size != shape[0]:
        skipped[sample.id] = f"size {size[0]} x {size[1]} px differs from the run's {shape[0][0]} x {shape[0][1]} px"
        reporter.warning(f"Sample '{sample.id}' skipped: {skipped[sample.id]}.")
        return None
    return stack


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run_ssl4eo(request: Ssl4eoRequest, reporter: Reporter) -> Ssl4eoResult:
    """Embed every sample of a dataset folder into a NeuCo-Bench CSV.

    Args:
        request: The run's parameters.
        reporter: Receives decisions, skipped samples, progress and cancellation.

    Returns:
        What was written.

    Raises:
        PluginError: On invalid parameters or inputs; a skipped sample is not
            an error.
        RunCancelledError: If the user cancelled. A fitting run has then
            written nothing; a run in a fixed embedding space keeps the rows
            written so far, for resuming.
    """
    check_request(request)
    started = time.perf_counter()
    dataset = scan_dataset(request.dataset_folder)
    device = select_torch_device(request.device, reporter)
    model = EmbeddingModel.load(request.embedding_model_path) if request.embedding_model_path else None
    compressor = OnnxCompressor.from_file(request.compressor_path, device) if request.compressor_path else None
    encoders = create_encoders(request.encoders, model, device, set(dataset.modalities), request.weights_dir,
                               reporter)
    sensors = modalities_to_read(encoders, dataset, reporter)
    candidates, skipped = _split_samples(dataset, sensors)
    batch = request.batch_size or max(1, min(encoder.preferred_batch_size() for encoder in encoders))
    fixed = model is not None or (compressor is not None and not any(encoder.needs_fit for encoder in encoders))

    reporter.info(f"Dataset {dataset.root}: {len(dataset.samples)} ids in "
                  f"{', '.join(MODALITY_FOLDERS[sensor] for sensor in dataset.modalities)}; reading "
                  f"{', '.join(MODALITY_FOLDERS[sensor] for sensor in sensors)} for "
                  f"{', '.join(encoder.card.name for encoder in encoders)}, batches of {batch}.")
    reporter.info(f"S2_OFFSET={request.s2_offset}: "
                  + ("subtracting 1000 DN from valid Sentinel-2 values (SSL4EO-S12 v1.1 convention)."
                     if request.s2_offset == "with_offset" else "Sentinel-2 values used as they are."))
    for identifier, reason in skipped.items():
        reporter.warning(f"Sample '{identifier}' skipped: {reason}.")
    if not candidates:
        raise InputError(f"DATASET_FOLDER: none of the {len(dataset.samples)} ids has every modality the "
                         f"encoders read ({', '.join(MODALITY_FOLDERS[sensor] for sensor in sensors)}).")
    context = _RunContext(request, dataset, encoders, sensors, candidates, skipped, batch, device, model,
                          compressor, reporter)
    result = _run_fixed(context) if fixed else _run_fitting(context)
    reporter.debug(f"Dataset run took {time.perf_counter() - started:.1f} s.")
    return result


@dataclass
class _RunContext:
    """The state a run carries from setup into its passes."""

    request: Ssl4eoRequest
    dataset: Ssl4eoDataset
    encoders: list[Encoder]
    sensors: tuple[Sensor, ...]
    candidates: list[Ssl4eoSample]
    skipped: dict[str, str]
    batch: int
    device: str
    model: EmbeddingModel | None
    compressor: OnnxCompressor | None
    reporter: Reporter
    filled: _FilledBands = field(default_factory=_FilledBands)
    shape: list[tuple[int, int]] = field(default_factory=list)
    rows_written: int = 0
    store: FeatureStore | None = None
    store_ids: set[str] = field(default_factory=set)
    feature_buffer: list[tuple[list[str], np.ndarray]] = field(default_factory=list)

    def read(self, sample: Ssl4eoSample) -> SampleStack | None:
        """Read a sample, or record why it is skipped."""
        stack = _read_or_skip(sample, self.sensors, self.request.s2_offset, self.shape, self.skipped,
                              self.reporter)
        if stack is not None:
            self.filled.add(stack)
        return stack


def _provenance(context: _RunContext, embedding_model: EmbeddingModel, compressor: OnnxCompressor,
                status: str, rows: int) -> dict[str, Any]:
    """Return the provenance record of the run."""
    request = context.request
    return {
        "format": PROVENANCE_FORMAT,
        "status": status,
        "fusedeo_version": __version__,
        "dataset_folder": str(context.dataset.root),
        "modalities_read": [MODALITY_FOLDERS[sensor] for sensor in context.sensors],
        "s2_offset": request.s2_offset,
        "seasons": list(SEASONS),
        "encoders": embedding_model.encoders,
        "layout": embedding_model.layout,
        "compressor": dict(embedding_model.compressor_summary, sha256=embedding_model.compressor_sha256,
                           execution_provider=compressor.providers[0]),
        "embedding_fingerprint": embedding_model.fingerprint,
        "encoder_fingerprint": encoder_fingerprint(embedding_model.encoders, embedding_model.layout,
                                                   embedding_model.fitted),
        "embedding_model_source": request.embedding_model_path,
        "device": context.device,
        "dimensions": compressor.output_width,
        "samples": {"ids": len(context.dataset.samples), "rows": rows, "skipped": len(context.skipped)},
        "skipped": [{"id": identifier, "reason": reason} for identifier, reason in sorted(context.skipped.items())],
        "decisions": context.filled.sentences(),
    }


def _report_end(context: _RunContext, rows: int, csv_path: str) -> None:
    for sentence in context.filled.sentences():
        context.reporter.warning(sentence)
    context.reporter.info(f"NeuCo-Bench CSV {csv_path}: {rows} rows; {len(context.skipped)} ids skipped and "
                          f"listed in {exclude_path_for(csv_path).name} (reasons in "
                          f"{provenance_path_for(csv_path).name}).")


def _run_fitting(context: _RunContext) -> Ssl4eoResult:
    """Fit kernels and/or PCA on the dataset, then write every output at once."""
    request, reporter = context.request, context.reporter
    if Path(request.output_csv).exists():
        reporter.warning(f"OUTPUT_CSV '{request.output_csv}' exists and is replaced: this run fits its "
                         "embedding space on all samples, so earlier rows cannot be kept. Runs with "
                         "EMBEDDING_MODEL resume instead.")
    progress = _Progress(reporter, "The run was cancelled; no output was written.")
    pending = PendingOutputs()
    try:
        with tempfile.TemporaryDirectory(prefix="fusedeo-ssl4eo-") as scratch:
            result = _fit_and_write(context, progress, pending, Path(scratch))
        pending.commit()
    except BaseException:
        pending.discard()
        raise
    return result


def _fit_and_write(context: _RunContext, progress: _Progress, pending: PendingOutputs,
                   scratch: Path) -> Ssl4eoResult:
    """Run the passes of a fitting run; outputs go to ``pending``."""
    request, reporter, encoders = context.request, context.reporter, context.encoders
    csv_path = pending.add(request.output_csv)
    exclude_path = pending.add(exclude_path_for(request.output_csv))
    provenance_path = pending.add(provenance_path_for(request.output_csv))
    model_path = pending.add(request.output_model_path) if request.output_model_path else None

    # Read every sample once first, so that corrupt archives stay out of kernel sampling and PCA.
    valid: list[Ssl4eoSample] = []
    for done, sample in enumerate(context.candidates):
        progress.update(0, 10, done, len(context.candidates))
        if context.read(sample) is not None:
            valid.append(sample)
    if not valid:
        raise InputError(f"DATASET_FOLDER: none of the {len(context.candidates)} samples could be read; "
                         "see the skipped samples above.")

    sampler = _dataset_sampler(context, valid)
    fit_encoders(encoders, sampler, reporter)
    progress.update(10, 15, 1, 1)

    layout = fused_layout(encoders)
    width = sum(block["channels"] * block["seasons"] for block in layout)
    features = np.lib.format.open_memmap(scratch / "features.npy", mode="w+", dtype=np.float32,
                                         shape=(len(valid), width))
    for number, chunk in enumerate(_batches(valid, context.batch)):
        stacks = []
        for offset, sample in enumerate(chunk):
            progress.update(15, 85, number * context.batch + offset, len(valid))
            stack = read_sample(sample, context.sensors, request.s2_offset)
            stacks.append(stack.values)
        start = number * context.batch
        features[start:start + len(chunk)] = encode_fused(encoders, np.stack(stacks), SEASONS_PRESENT)
    features.flush()
    if not np.all(np.isfinite(features)):
        raise InputError("An encoder produced non-finite features; check the dataset's units (S1 in dB, S2 as "
                         "digital numbers) and S2_OFFSET.")

    compressor, summary = select_compressor(context.model, context.compressor, request.compressor_path,
                                            request.dimensions, features, layout, context.device, reporter,
                                            unit="samples", remedy="or a dataset folder with more samples")
    compressor.report_providers(reporter)
    embedding_model = build_embedding_model(encoders, compressor, summary)
    if context.compressor is not None:
        context.compressor.check_encoder_fingerprint(
            encoder_fingerprint(embedding_model.encoders, layout, embedding_model.fitted))
    with open(csv_path, "w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["id", *(str(index) for index in range(compressor.output_width))])
        for number, chunk in enumerate(_batches(valid, 256)):
            start = number * 256
            embedded = compressor.compress(np.asarray(features[start:start + len(chunk)]))
            for sample, values in zip(chunk, embedded):
                writer.writerow(format_row(sample.id, values))
            progress.update(85, 100, start + len(chunk), len(valid))
    write_exclude(exclude_path, context.skipped)
    write_json(provenance_path, _provenance(context, embedding_model, compressor, "complete", len(valid)))
    if model_path is not None:
        embedding_model.save(model_path)
        reporter.info(f"Embedding model (fingerprint {embedding_model.fingerprint[:16]}) saved; reuse it as "
                      "EMBEDDING_MODEL to embed more samples in this space or to resume runs.")
    if request.output_features_path:
        _append_features(request.output_features_path, embedding_model, [sample.id for sample in valid],
                         features, context)
    _report_end(context, len(valid), request.output_csv)
    return Ssl4eoResult(request.output_csv, str(exclude_path_for(request.output_csv)),
                        str(provenance_path_for(request.output_csv)), request.output_model_path,
                        embedding_model.fingerprint, compressor.output_width, len(context.dataset.samples),
                        len(valid), 0, dict(context.skipped), resumable=False)


def _dataset_sampler(context: _RunContext, valid: list[Ssl4eoSample]) -> PatchSampler:
    """Give encoders lazy access to the (sample, season) pairs of the readable samples."""
    cache: OrderedDict[int, np.ndarray] = OrderedDict()
    seasons = len(SEASONS)

    def read_window(pair: int, row: int, col: int, rows: int, cols: int) -> np.ndarray:
        # Each draw needs one season of one sample, so only that season is decoded.
        if pair not in cache:
            index, season = divmod(pair, seasons)
            stack = read_sample(valid[index], context.sensors, context.request.s2_offset, season)
            cache[pair] = stack.values[season]
            if len(cache) > _SAMPLE_CACHE_SIZE:
                cache.popitem(last=False)
        cache.move_to_end(pair)
        return cache[pair][:, row:row + rows, col:col + cols]

    # A channel counts as provided when its modality is read and some archive contains the band.
    present = [sensor in context.sensors and context.filled.per_band.get((sensor.value, band), 0) < len(valid)
               for sensor, band in STACK_CHANNELS]
    return PatchSampler(len(valid) * seasons, context.shape[0], read_window, present)


def _append_features(path: str, embedding_model: EmbeddingModel, ids: list[str], features: np.ndarray,
                     context: _RunContext) -> None:
    """Append fused vectors to the feature store, leaving out ids it already contains.

    The store and its ids are opened once per run and kept in ``context``,
    because a resumable run appends after every batch.
    """
    if context.store is None:
        fingerprint = encoder_fingerprint(embedding_model.encoders, embedding_model.layout, embedding_model.fitted)
        context.store = FeatureStore.create_or_append(path, embedding_model.encoders, embedding_model.layout,
                                                      fingerprint)
        context.store_ids = set(context.store.ids)
    keep = [index for index, identifier in enumerate(ids) if identifier not in context.store_ids]
    if not keep:
        return
    kept_ids = [ids[index] for index in keep]
    context.store.append(kept_ids, np.asarray(features)[keep],
                         {"dataset_folder": str(context.dataset.root), "s2_offset": context.request.s2_offset,
                          "output_csv": context.request.output_csv, "fusedeo_version": __version__})
    context.store_ids.update(kept_ids)
    context.reporter.debug(f"Feature store {path}: appended {len(keep)} fused vectors (now {len(context.store)}).")


def _flush_features(context: _RunContext, embedding_model: EmbeddingModel) -> None:
    """Append the fused vectors collected by a resumable run to the feature store.

    NOTE: a process killed between two appends loses up to
    ``_FEATURE_FLUSH_ROWS`` fused vectors whose CSV rows were written, and a
    resumed run does not compute them again.
    """
    if not context.feature_buffer or not context.request.output_features_path:
        return
    ids = [identifier for buffered, _ in context.feature_buffer for identifier in buffered]
    features = np.concatenate([values for _, values in context.feature_buffer])
    context.feature_buffer = []
    _append_features(context.request.output_features_path, embedding_model, ids, features, context)


def _run_fixed(context: _RunContext) -> Ssl4eoResult:
    """Embed in a fixed embedding space, appending rows per batch and resuming earlier rows."""
    request, reporter, encoders = context.request, context.reporter, context.encoders
    layout = fused_layout(encoders)
    compressor, summary = select_compressor(context.model, context.compressor, request.compressor_path,
                                            request.dimensions, None, layout, context.device, reporter)
    compressor.report_providers(reporter)
    embedding_model = build_embedding_model(encoders, compressor, summary)
    if context.compressor is not None:
        context.compressor.check_encoder_fingerprint(
            encoder_fingerprint(embedding_model.encoders, layout, embedding_model.fitted))
    fingerprint = embedding_model.fingerprint
    # Compare the encoder side only: a COMPRESSOR file replaces the model's compressor.
    model = context.model
    if model is not None and encoder_fingerprint(embedding_model.encoders, layout, embedding_model.fitted) != \
            encoder_fingerprint(model.encoders, model.layout, model.fitted):
        raise LayoutMismatchError("EMBEDDING_MODEL: the rebuilt encoders do not reproduce the model's "
                                  "fingerprint; the file may come from another FusedEO version.")
    csv_path = Path(request.output_csv)
    provenance_path = provenance_path_for(csv_path)
    if not csv_path.parent.is_dir():
        raise InputError(f"Output folder '{csv_path.parent}' does not exist; create it or choose another path.")
    written = read_resume_state(csv_path, provenance_path, fingerprint, request.s2_offset, compressor.output_width)
    if written:
        reporter.info(f"OUTPUT_CSV '{csv_path}' already contains {len(written)} rows of this embedding space "
                      f"(fingerprint {fingerprint[:16]}); embedding the remaining samples.")
    else:
        with open(csv_path, "w", newline="") as file:
            header = ["id", *(str(index) for index in range(compressor.output_width))]
            csv.writer(file, lineterminator="\n").writerow(header)
    write_json(provenance_path, _provenance(context, embedding_model, compressor, "incomplete", len(written)))

    progress = _Progress(reporter, "")
    with open(csv_path, "a", newline="") as file:
        try:
            _embed_rows(context, written, compressor, embedding_model, file, progress)
        except RunCancelledError as err:
            raise RunCancelledError(
                f"The run was cancelled; {len(written) + context.rows_written} rows are kept in '{csv_path}'. "
                "Run again with the same OUTPUT_CSV and EMBEDDING_MODEL (or COMPRESSOR) to resume."
            ) from err
        finally:
            # Rows kept in the CSV keep their fused vectors too, also when the run is cancelled.
            _flush_features(context, embedding_model)
    rows = context.rows_written
    total = len(written) + rows
    sort_rows_by_id(csv_path)
    write_exclude(exclude_path_for(csv_path), context.skipped)
    write_json(provenance_path, _provenance(context, embedding_model, compressor, "complete", total))
    if request.output_model_path:
        embedding_model.save(request.output_model_path)
    _report_end(context, total, request.output_csv)
    return Ssl4eoResult(request.output_csv, str(exclude_path_for(csv_path)), str(provenance_path),
                        request.output_model_path, fingerprint, compressor.output_width,
                        len(context.dataset.samples), rows, len(written), dict(context.skipped), resumable=True)


def _embed_rows(context: _RunContext, written: set[str], compressor: OnnxCompressor,
                embedding_model: EmbeddingModel, file: TextIO, progress: _Progress) -> None:
    """Embed the samples not in ``written``, appending and flushing rows per batch.

    Batches are fixed slices of the sorted candidates, and a batch with some
    rows already written is encoded whole again. A sample is then always
    encoded with the same batch companions, so a resumed run writes the same
    bytes as an uninterrupted one, because float results of a convolution can
    differ in the last bit between batch sizes. Rows are counted in
    ``context.rows_written``.
    """
    writer = csv.writer(file, lineterminator="\n")
    total = len(context.candidates)
    for number, chunk in enumerate(_batches(context.candidates, context.batch)):
        if all(sample.id in written for sample in chunk):
            continue
        stacks, ids = [], []
        for offset, sample in enumerate(chunk):
            progress.update(0, 100, number * context.batch + offset, total)
            stack = context.read(sample)
            if stack is not None:
                stacks.append(stack.values)
                ids.append(sample.id)
        if not stacks:
            continue
        features = encode_fused(context.encoders, np.stack(stacks), SEASONS_PRESENT)
        if not np.all(np.isfinite(features)):
            raise InputError(f"An encoder produced non-finite features for samples {', '.join(ids)}; check the "
                             "dataset's units (S1 in dB, S2 as digital numbers) and S2_OFFSET.")
        embedded = compressor.compress(features)
        new = [index for index, identifier in enumerate(ids) if identifier not in written]
        for index in new:
            writer.writerow(format_row(ids[index], embedded[index]))
        file.flush()
        context.rows_written += len(new)
        if context.request.output_features_path:
            context.feature_buffer.append(([ids[index] for index in new], features[new]))
            if sum(len(buffered) for buffered, _ in context.feature_buffer) >= _FEATURE_FLUSH_ROWS:
                _flush_features(context, embedding_model)
    progress.update(0, 100, total, total)


def build_argument_parser() -> argparse.ArgumentParser:
    """Return the console parser; options mirror the parameters of ``fusedeo:embedssl4eo``."""
    parser = argparse.ArgumentParser(
        prog="fusedeo-embed-ssl4eo",
        description="Embed a folder of SSL4EO-S12 zarr.zip cubes into a NeuCo-Bench CSV, with the "
                    "preprocessing of fusedeo:embed.")
    parser.add_argument("dataset_folder", help="folder with s1, s2l1c and s2l2a subfolders")
    parser.add_argument("output_csv", help="NeuCo-Bench CSV to write or resume")
    parser.add_argument("--encoders", default="mosaiks",
                        help=f"comma-separated encoders among {', '.join(ENCODER_NAMES)} (default mosaiks)")
    parser.add_argument("--compressor", help="ONNX compressor; default: PCA fitted on this dataset")
    parser.add_argument("--dimensions", type=int, default=1024, help="PCA width (default 1024)")
    parser.add_argument("--s2-offset", choices=SSL4EO_OFFSET_CHOICES, default="without_offset",
                        help="without_offset for SSL4EO-S12-downstream, with_offset for SSL4EO-S12 v1.1")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    parser.add_argument("--batch-size", type=int, default=0, help="samples per encoder call (0: encoder default)")
    parser.add_argument("--embedding-model", help="embedding model (.fusedeo) to reuse; makes the run resumable")
    parser.add_argument("--output-embedding-model", help="embedding model (.fusedeo) to write")
    parser.add_argument("--output-features", help="feature store folder to create or append to")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the console command; return the exit status (0 success, 1 error, 2 cancelled)."""
    arguments = build_argument_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    request = Ssl4eoRequest(
        dataset_folder=arguments.dataset_folder,
        encoders=[name.strip() for name in arguments.encoders.split(",") if name.strip()],
        output_csv=arguments.output_csv,
        dimensions=arguments.dimensions,
        s2_offset=arguments.s2_offset,
        device=arguments.device,
        batch_size=arguments.batch_size,
        compressor_path=arguments.compressor,
        embedding_model_path=arguments.embedding_model,
        output_model_path=arguments.output_embedding_model,
        output_features_path=arguments.output_features,
    )
    from .submission import check_submission

    try:
        result = run_ssl4eo(request, LoggingReporter("fusedeo.ssl4eo"))
        check = check_submission(result.output_csv, request.dataset_folder, result.dimensions,
                                 result.exclude_path)
    except RunCancelledError as err:
        print(err, file=sys.stderr)
        return 2
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{result.output_csv}: {result.rows_written + result.rows_resumed} rows of {result.dimensions} "
          f"dimensions ({result.rows_resumed} kept from an earlier run), {len(result.skipped)} ids skipped; "
          f"fingerprint {result.fingerprint[:16]}.")
    for line in check.messages():
        print(line)
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
