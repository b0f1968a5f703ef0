"""Train a probe from an embedding raster and labels, and apply it to an embedding raster.

These two functions are the core of ``fusedeo:trainprobe`` and
``fusedeo:applyprobe``; they take paths and a Reporter and run without QGIS.
"""

import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError, LayoutMismatchError, ModelFileError
from ..raster.embedding_raster import (
    FINGERPRINT_KEY,
    KIND_KEY,
    PROVENANCE_KEY,
    VERSION_KEY,
    EmbeddingRaster,
    iter_embedding_blocks,
    open_embedding_raster,
    valid_patch_mask,
)
from ..raster.labels import (
    MIN_COVERED_FRACTION,
    PatchLabels,
    labels_from_raster,
    labels_from_vector,
)
from ..raster.prediction_raster import (
    check_geotiff_path,
    write_prediction_raster,
    write_prediction_style,
)
from ..reporting import Reporter
from . import probes
from .probe_report import write_probe_report

logger = logging.getLogger(__name__)

PREDICTION_KIND = "prediction"
PROBE_TASK_NAME_KEY = "FUSEDEO_PROBE_TASK_NAME"
PROBE_TASK_TYPE_KEY = "FUSEDEO_PROBE_TASK_TYPE"
PROBE_SKILL_KEY = "FUSEDEO_PROBE_SKILL"
PROBE_LABEL_RANGE_KEY = "FUSEDEO_PROBE_LABEL_RANGE"
DEFAULT_MIN_SAMPLES = 10

# Probe metadata keys written only by the training run (the others are in models.probes).
META_LABEL_SOURCE = "label_source"
META_EMBEDDINGS_SOURCE = "embeddings_source"
META_DECISIONS = "decisions"


@dataclass(frozen=True)
class LabelSource:
    """Label input of a training run: exactly one of a raster or a vector layer.

    Attributes:
        raster_path: Label raster (``LABELS_RASTER``), or None.
        class_values: Class codes for a categorical raster, or None.
        vector_path: Label vector layer (``LABELS_VECTOR``), or None.
        field_name: Numeric field of the vector layer (``FIELD``), or None.
    """

    raster_path: str | None = None
    class_values: list[int] | None = None
    vector_path: str | None = None
    field_name: str | None = None

    def check(self) -> None:
        """Reject both or neither label input, and a vector without a field.

        Raises:
            InputError: Naming ``LABELS_RASTER`` and ``LABELS_VECTOR`` (or ``FIELD``).
        """
        if self.raster_path and self.vector_path:
            raise InputError(
                "LABELS_RASTER and LABELS_VECTOR are both set; give exactly one of them "
                "(a label raster, or a vector layer with FIELD)."
            )
        if not self.raster_path and not self.vector_path:
            raise InputError(
                "Neither LABELS_RASTER nor LABELS_VECTOR is set; give exactly one of them "
                "(a label raster, or a vector layer with FIELD)."
            )
        if self.vector_path and self.class_values:
            raise InputError(
                "CLASS_VALUES applies to LABELS_RASTER only; with LABELS_VECTOR the label is the "
                "numeric FIELD. Clear CLASS_VALUES, or recode the field to 0/1 for classification."
            )
        if self.vector_path and not self.field_name:
            raise InputError(
                "FIELD is empty; LABELS_VECTOR needs the name of its numeric label field."
            )

    @property
    def parameter_name(self) -> str:
        """The label parameter in use."""
        return "LABELS_RASTER" if self.raster_path else "LABELS_VECTOR"


@dataclass
class TrainProbeResult:
    """Outcome of :func:`train_probe`."""

    probe_path: str
    report_path: str
    skill: probes.Skill
    sample_count: int
    probe: probes.LinearProbe


def _read_labels(
    source: LabelSource, embedding: EmbeddingRaster, reporter: Reporter
) -> PatchLabels:
    if source.raster_path:
        return labels_from_raster(source.raster_path, embedding, source.class_values, reporter)
    return labels_from_vector(
        source.vector_path or "", source.field_name or "", embedding, reporter
    )


def _gather_samples(
    embedding: EmbeddingRaster, labels: PatchLabels, reporter: Reporter
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Collect the embeddings and targets of patches that have both, reading by blocks."""
    features: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    nodata_count = 0
    for row_offset, values in iter_embedding_blocks(embedding):
        block_labels = labels.values[row_offset : row_offset + values.shape[0]]
        labelled = np.isfinite(block_labels)
        valid = valid_patch_mask(values)
        nodata_count += int((labelled & ~valid).sum())
        keep = labelled & valid
        features.append(values[keep])
        targets.append(block_labels[keep])
    embeddings = np.concatenate(features).astype(np.float64)
    target = np.concatenate(targets)
    total = embedding.rows * embedding.cols
    counts = [
        f"{total} patches in the embedding raster; {labels.labelled_count} have a label "
        f"(a label covers at least {MIN_COVERED_FRACTION:.0%} of the patch, or a point falls in it).",
        f"{nodata_count} labelled patches were excluded because their embedding is nodata.",
        f"{total - labels.labelled_count} patches were excluded because they have no label.",
        f"{target.size} samples were used.",
    ]
    for line in counts:
        reporter.info(line)
    return embeddings, target, counts


def _classification_targets(
    values: np.ndarray, labels: PatchLabels, parameter_name: str
) -> np.ndarray:
    """Turn patch labels into 0/1 classes: a patch is class 1 when at least half of it is class 1."""
    if not labels.is_class_fraction and not labels.binary_source:
        found = ", ".join(f"{value:g}" for value in labels.non_binary_examples)
        what = f"field '{labels.name}' of" if parameter_name == "LABELS_VECTOR" else "label raster"
        raise InputError(
            f"TASK=classification needs labels 0 and 1, but {what} {parameter_name} "
            f"'{labels.source}' contains {found}. Recode the labels to 0/1, give CLASS_VALUES "
            "with a categorical label raster, or use TASK=regression."
        )
    return (values >= 0.5).astype(np.int64)


def train_probe(
    embeddings_path: str,
    source: LabelSource,
    task: str,
    task_name: str,
    probe_path: str,
    report_path: str,
    reporter: Reporter,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> TrainProbeResult:
    """Train a linear probe on the labelled patches of an embedding raster.

    Args:
        embeddings_path: Embedding raster written by ``fusedeo:embed``.
        source: The label input.
        task: ``"regression"`` or ``"classification"``.
        task_name: Name recorded in the probe and used as the prediction band name.
        probe_path: Destination ``.onnx``.
        report_path: Destination ``.html``.
        reporter: Receives decisions, counts and progress.
        min_samples: Minimum number of usable samples.

    Returns:
        Paths, skill and the fitted probe.

    Raises:
        InputError: For bad label inputs, non-binary classification labels or
            too few samples.
        RunCancelledError: If the reporter is cancelled.
    """
    if task not in probes.TASKS:
        raise InputError(f"TASK: '{task}' is not valid; expected regression or classification.")
    source.check()
    embedding = open_embedding_raster(embeddings_path)
    reporter.info(
        f"Embeddings: {embedding.cols} x {embedding.rows} patches, {embedding.band_count} bands, "
        f"patch {embedding.patch_size_px} px, stride {embedding.stride_px} px, "
        f"fingerprint {embedding.fingerprint}."
    )
    labels = _read_labels(source, embedding, reporter)
    embeddings, values, counts = _gather_samples(embedding, labels, reporter)
    if values.size < min_samples:
        raise InputError(
            f"Only {values.size} labelled patches with valid embeddings were found; MIN_SAMPLES is "
            f"{min_samples}. Give more labels, a smaller PATCH_SIZE/STRIDE in fusedeo:embed, or "
            "lower MIN_SAMPLES."
        )
    notes = list(labels.decisions) + counts
    if task == probes.CLASSIFICATION:
        targets = _classification_targets(values, labels, source.parameter_name)
        threshold_note = (
            "A patch is class 1 when its label is at least 0.5 (at least half of it is class 1): "
            f"{int(targets.sum())} class 1, {int(targets.size - targets.sum())} class 0."
        )
        notes.append(threshold_note)
        reporter.info(threshold_note)
    else:
        targets = values
    probes.check_targets(targets, task, f"{source.parameter_name} '{labels.source}'")

    reporter.info(
        f"Cross-validating the {task} probe ({embeddings.shape[0]} samples, {embeddings.shape[1]} bands)."
    )
    skill = probes.evaluate_skill(embeddings, targets, task, reporter)
    notes.extend(skill.notes)
    for note in skill.notes:
        reporter.warning(note)
    reporter.info(
        f"Skill ({skill.metric}, {skill.n_splits} splits holding out {skill.test_count}): "
        f"mean {skill.mean:.4f}, std {skill.std:.4f}, Q {skill.q:.3f}."
    )
    probe = probes.fit_probe(embeddings, targets, task)
    reporter.info(f"Final probe fitted on all {targets.size} samples ({probe.regularisation}).")

    if task == probes.CLASSIFICATION:
        label_min, label_max = 0.0, 1.0
    else:
        label_min, label_max = float(targets.min()), float(targets.max())
    metadata = _probe_metadata(
        task, task_name, labels, (label_min, label_max), skill, embedding, probe
    )
    metadata[META_DECISIONS] = json.dumps(notes)
    _write_probe_outputs(probe, embeddings, metadata, probe_path, report_path, skill, notes, labels)
    return TrainProbeResult(probe_path, report_path, skill, int(targets.size), probe)


def _label_unit(task: str, labels: PatchLabels) -> str:
    if task == probes.CLASSIFICATION:
        return "probability of class 1"
    if labels.is_class_fraction:
        return "fraction (0-1)"
    return f"units of {labels.name}"


def _probe_metadata(
    task: str,
    task_name: str,
    labels: PatchLabels,
    label_range: tuple[float, float],
    skill: probes.Skill,
    embedding: EmbeddingRaster,
    probe: probes.LinearProbe,
) -> dict[str, str]:
    label_min, label_max = label_range
    return {
        probes.META_TASK_NAME: task_name,
        probes.META_TASK_TYPE: task,
        probes.META_LABEL_NAME: labels.name,
        probes.META_LABEL_UNIT: _label_unit(task, labels),
        probes.META_LABEL_MIN: repr(label_min),
        probes.META_LABEL_MAX: repr(label_max),
        probes.META_SKILL_METRIC: skill.metric,
        probes.META_SKILL_MEAN: repr(skill.mean),
        probes.META_SKILL_STD: repr(skill.std),
        probes.META_SKILL_Q: repr(skill.q),
        probes.META_SKILL_SPLITS: str(skill.n_splits),
        probes.META_SAMPLE_COUNT: str(probe.sample_count),
        probes.META_INPUT_WIDTH: str(probe.input_width),
        probes.META_FINGERPRINT: embedding.fingerprint,
        probes.META_VERSION: __version__,
        probes.META_REGULARISATION: probe.regularisation,
        META_LABEL_SOURCE: labels.source,
        META_EMBEDDINGS_SOURCE: embedding.path,
    }


def _write_probe_outputs(
    probe: probes.LinearProbe,
    embeddings: np.ndarray,
    metadata: dict[str, str],
    probe_path: str,
    report_path: str,
    skill: probes.Skill,
    notes: list[str],
    labels: PatchLabels,
) -> None:
    """Export, verify and report, each under a temporary name renamed on success."""
    probe_file = Path(probe_path)
    report_file = Path(report_path)
    probe_file.parent.mkdir(parents=True, exist_ok=True)
    report_file.parent.mkdir(parents=True, exist_ok=True)
    suffix = uuid.uuid4().hex[:8]
    probe_temporary = probe_file.with_name(f".{probe_file.stem}.{suffix}.partial.onnx")
    report_temporary = report_file.with_name(f".{report_file.stem}.{suffix}.partial.html")
    try:
        probes.export_probe_onnx(probe, str(probe_temporary), metadata)
        _verify_export(probe, embeddings, str(probe_temporary))
        rows = [
            ("Task", f"{metadata[probes.META_TASK_NAME]} ({metadata[probes.META_TASK_TYPE]})"),
            ("Label", f"{labels.name} from {labels.source}"),
            (
                "Label range",
                f"{metadata[probes.META_LABEL_MIN]} to {metadata[probes.META_LABEL_MAX]}",
            ),
            ("Samples", metadata[probes.META_SAMPLE_COUNT]),
            ("Skill metric", skill.metric),
            ("Mean over splits", f"{skill.mean:.4f}"),
            ("Standard deviation", f"{skill.std:.4f}"),
            ("Q = 2 mean / (0.02 + std)", f"{skill.q:.3f}"),
            (
                "Splits",
                f"{skill.n_splits}, each holding out {skill.test_count} samples (random_state 42)",
            ),
            ("Regularisation", probe.regularisation),
            ("Embedding width", metadata[probes.META_INPUT_WIDTH]),
            ("Embedding fingerprint", metadata[probes.META_FINGERPRINT]),
            ("Embeddings", metadata[META_EMBEDDINGS_SOURCE]),
            ("Probe file", str(probe_file)),
            ("FusedEO version", __version__),
        ]
        write_probe_report(
            str(report_temporary),
            f"Linear probe: {metadata[probes.META_TASK_NAME]}",
            rows,
            notes,
            skill,
            probe.task,
            labels.name,
        )
        os.replace(probe_temporary, probe_file)
        os.replace(report_temporary, report_file)
    finally:
        probe_temporary.unlink(missing_ok=True)
        report_temporary.unlink(missing_ok=True)


def _verify_export(probe: probes.LinearProbe, embeddings: np.ndarray, path: str) -> None:
    """Check that onnxruntime reproduces the probe on the training samples."""
    session = probes.onnx_session(path, "OUTPUT_PROBE")
    sample = embeddings[:1000].astype(np.float32)
    exported = session.run(None, {probes.INPUT_NAME: sample})[0][:, 0]
    expected = probe.predict(sample)
    if not np.allclose(exported, expected, rtol=1e-5, atol=1e-5):
        worst = float(np.max(np.abs(exported - expected)))
        raise ModelFileError(
            f"OUTPUT_PROBE: the exported ONNX probe differs from the fitted one by up to {worst:g}; "
            "the probe was not written."
        )


@dataclass
class ApplyProbeResult:
    """Outcome of :func:`apply_probe`."""

    output_path: str
    style_path: str
    predicted_count: int
    probe: probes.ProbeInfo


def check_probe_matches(probe: probes.ProbeInfo, embedding: EmbeddingRaster) -> None:
    """Reject a probe made for another embedding width or space.

    Raises:
        LayoutMismatchError: Naming both widths or both fingerprints.
    """
    if probe.input_width != embedding.band_count:
        raise LayoutMismatchError(
            f"PROBE '{probe.path}' expects embeddings of width {probe.input_width}, but EMBEDDINGS "
            f"'{embedding.path}' has {embedding.band_count} bands. Apply a probe trained on "
            "embeddings of this raster's kind."
        )
    if probe.fingerprint != embedding.fingerprint:
        raise LayoutMismatchError(
            f"PROBE '{probe.path}' was trained on embeddings with fingerprint "
            f"{probe.fingerprint or '(none)'}, but EMBEDDINGS '{embedding.path}' has fingerprint "
            f"{embedding.fingerprint}. The embeddings are from another embedding model; compute "
            "them with the EMBEDDING_MODEL the probe was trained with, or train a new probe."
        )


def apply_probe(
    embeddings_path: str, probe_path: str, output_path: str, reporter: Reporter
) -> ApplyProbeResult:
    """Map a probe's predictions over an embedding raster.

    Args:
        embeddings_path: Embedding raster written by ``fusedeo:embed``.
        probe_path: Probe written by ``fusedeo:trainprobe``.
        output_path: Destination ``.tif``; a ``.qml`` style is written beside it.
        reporter: Receives progress; its cancel state is checked per block.

    Returns:
        The output paths and the number of patches predicted.

    Raises:
        ModelFileError: If the probe file is invalid.
        LayoutMismatchError: If the probe does not fit the embeddings.
        RunCancelledError: If cancelled; no output is left behind.
    """
    check_geotiff_path(output_path, "OUTPUT")
    probe = probes.load_probe(probe_path)
    embedding = open_embedding_raster(embeddings_path)
    check_probe_matches(probe, embedding)
    session = probes.onnx_session(probe_path)
    reporter.info(
        f"Probe '{probe.task_name}' ({probe.task_type}, {probe.metadata.get(probes.META_SKILL_METRIC, '?')} "
        f"{float(probe.metadata.get(probes.META_SKILL_MEAN, 'nan')):.3f}, Q "
        f"{float(probe.metadata.get(probes.META_SKILL_Q, 'nan')):.2f}) on {embedding.cols} x "
        f"{embedding.rows} patches; onnxruntime providers {session.get_providers()}."
    )

    def predict(values: np.ndarray) -> np.ndarray:
        return session.run(None, {probes.INPUT_NAME: values.astype(np.float32)})[0][:, 0]

    label_min, label_max = probe.label_range
    metadata = {
        KIND_KEY: PREDICTION_KIND,
        VERSION_KEY: __version__,
        FINGERPRINT_KEY: embedding.fingerprint,
        PROBE_TASK_NAME_KEY: probe.task_name,
        PROBE_TASK_TYPE_KEY: probe.task_type,
        PROBE_LABEL_RANGE_KEY: json.dumps([label_min, label_max]),
        PROBE_SKILL_KEY: json.dumps(
            {
                key: probe.metadata.get(getattr(probes, f"META_SKILL_{key.upper()}"), "")
                for key in ("metric", "mean", "std", "q", "splits")
            }
        ),
        PROVENANCE_KEY: json.dumps(
            {
                "embeddings": embedding.path,
                "probe": probe.path,
                "probe_sha256": probes.probe_sha256(probe.path),
                "label_name": probe.metadata.get(probes.META_LABEL_NAME, ""),
                "label_unit": probe.metadata.get(probes.META_LABEL_UNIT, ""),
                "sample_count": probe.metadata.get(probes.META_SAMPLE_COUNT, ""),
            }
        ),
    }
    predicted = write_prediction_raster(
        embedding, predict, output_path, probe.task_name, metadata, reporter
    )
    skipped = embedding.rows * embedding.cols - predicted
    reporter.info(f"{predicted} patches predicted; {skipped} nodata patches left as nodata.")
    style = write_prediction_style(output_path, label_min, label_max)
    reporter.info(f"Style: colour ramp from {label_min:g} to {label_max:g} written to {style}.")
    return ApplyProbeResult(output_path, str(style), predicted, probe)
