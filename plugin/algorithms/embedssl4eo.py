"""``fusedeo:embedssl4eo`` — Embed an SSL4EO-S12 dataset folder into a NeuCo-Bench CSV."""

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterNumber,
)

from ...errors import RunCancelledError
from ...models.device import DEVICE_CHOICES
from ...models.encoders import ENCODER_NAMES
from ...raster.ssl4eo import SSL4EO_OFFSET_CHOICES
from ..feedback import FeedbackReporter
from .downloadweights import default_weights_dir
from .base import FusedEOAlgorithm


class EmbedSsl4eoAlgorithm(FusedEOAlgorithm):
    """SSL4EO-S12 dataset folder of zarr.zip cubes → NeuCo-Bench CSV, exclude file and provenance."""

    DATASET_FOLDER = "DATASET_FOLDER"
    ENCODERS = "ENCODERS"
    COMPRESSOR = "COMPRESSOR"
    DIMENSIONS = "DIMENSIONS"
    S2_OFFSET = "S2_OFFSET"
    DEVICE = "DEVICE"
    BATCH_SIZE = "BATCH_SIZE"
    EMBEDDING_MODEL = "EMBEDDING_MODEL"
    OUTPUT_CSV = "OUTPUT_CSV"
    OUTPUT_EMBEDDING_MODEL = "OUTPUT_EMBEDDING_MODEL"
    OUTPUT_FEATURES = "OUTPUT_FEATURES"
    OUTPUT_EXCLUDE = "OUTPUT_EXCLUDE"
    OUTPUT_PROVENANCE = "OUTPUT_PROVENANCE"
    ROWS = "ROWS"
    SKIPPED = "SKIPPED"

    ALGORITHM_ID = "embedssl4eo"
    DISPLAY_NAME = "Embed an SSL4EO-S12 dataset folder"
    GROUP = "Embeddings"
    GROUP_ID = "embeddings"
    SUMMARY = (
        "This algorithm embeds every sample of a folder in the SSL4EO-S12 layout (subfolders s1, s2l1c and "
        "s2l2a, each with <id>.zarr.zip archives directly or in part-* folders; bands of four seasons at "
        "264 x 264 px) and writes the NeuCo-Bench CSV: a column id (the archive name without .zarr.zip) and "
        "columns 0 … N-1, one row per sample, sorted by id. The preprocessing is that of Compute seasonal "
        "embeddings: missing bands and nodata are filled with the band's normalisation mean, and each "
        "encoder gets the S2 offset convention of its weights. Samples without a modality the encoders read, "
        "and corrupt archives, are skipped, reported and listed in <name>.exclude.txt next to the CSV; "
        "<name>.provenance.json records encoders, compressor, fingerprints, S2 offset and the reason for "
        "every skipped id. With EMBEDDING_MODEL (or a COMPRESSOR with encoders that fit nothing) rows are "
        "written as they are computed, a cancelled run keeps them, and a rerun on the same CSV resumes. "
        "Without it, mosaiks kernels and PCA are fitted on all samples, so the CSV is written at the end "
        "and a cancelled run leaves nothing."
    )
    PARAMETER_HELP = {
        DATASET_FOLDER: ("Dataset folder", "Folder that contains the s1, s2l1c and s2l2a folders of the dataset."),
        ENCODERS: ("Encoders", "Encoders whose features are fused, in a fixed block order. mosaiks draws its "
                   "kernels from this dataset (seed 10012023) unless EMBEDDING_MODEL gives them."),
        COMPRESSOR: ("Compressor (.onnx)", "ONNX compressor with one input [N, D] of fused vectors and one "
                     "output [N, K]. When empty, PCA to DIMENSIONS is fitted on all samples of the dataset."),
        DIMENSIONS: ("Embedding dimensions", "Number of PCA components when no compressor is given; capped at "
                     "the number of samples minus one, with a warning."),
        S2_OFFSET: ("Sentinel-2 offset", "without_offset for SSL4EO-S12-downstream and the Embed2Scale "
                    "challenge data; with_offset for SSL4EO-S12 v1.1, whose S2 values carry ESA's +1000 "
                    "offset (subtracted from every valid value)."),
        DEVICE: ("Device", "Where encoders run: auto (CUDA when available), cpu or cuda (an error when no CUDA "
                 "device is usable)."),
        BATCH_SIZE: ("Batch size (samples)", "Samples per encoder call; 0 uses the encoders' preferred size."),
        EMBEDDING_MODEL: ("Embedding model to reuse", "Embedding model file of an earlier run (from this "
                          "algorithm or Compute seasonal embeddings). Its encoders, kernels and compressor are "
                          "reused, so the CSV is in the same embedding space, and the run can resume."),
        OUTPUT_CSV: ("NeuCo-Bench CSV", "CSV with a column id and columns 0 … N-1 as float32 text. An existing "
                     "file of the same embedding space and S2 offset is resumed (see the summary)."),
        OUTPUT_EMBEDDING_MODEL: ("Embedding model", "Optional file (.fusedeo) with the encoders' settings, the "
                                 "fitted kernels and the compressor of this run, for resumable reruns."),
        OUTPUT_FEATURES: ("Feature store", "Optional folder (a Zarr store) that keeps the raw fused vectors with "
                          "the sample ids, for training a compressor; appended to when its layout and fitted "
                          "encoder parts match."),
        OUTPUT_EXCLUDE: ("Exclude file", "Output: <name>.exclude.txt next to the CSV, the skipped ids one per "
                         "line, as NeuCo-Bench reads exclude files."),
        OUTPUT_PROVENANCE: ("Provenance file", "Output: <name>.provenance.json next to the CSV."),
        ROWS: ("Rows", "Output: number of rows in the CSV."),
        SKIPPED: ("Skipped ids", "Output: number of ids skipped."),
    }

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API)
        """Declare the parameters."""
        self.addParameter(QgsProcessingParameterFile(
            self.DATASET_FOLDER, self.label(self.DATASET_FOLDER), behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterEnum(
            self.ENCODERS, self.label(self.ENCODERS), options=list(ENCODER_NAMES), allowMultiple=True,
            defaultValue=["mosaiks"], usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterFile(
            self.COMPRESSOR, self.label(self.COMPRESSOR), extension="onnx", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.DIMENSIONS, self.label(self.DIMENSIONS), QgsProcessingParameterNumber.Integer, 1024, minValue=1))
        self.addParameter(QgsProcessingParameterEnum(
            self.S2_OFFSET, self.label(self.S2_OFFSET), options=list(SSL4EO_OFFSET_CHOICES),
            defaultValue="without_offset", usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, self.label(self.DEVICE), options=list(DEVICE_CHOICES), defaultValue="auto",
            usesStaticStrings=True))
        advanced = [
            QgsProcessingParameterNumber(self.BATCH_SIZE, self.label(self.BATCH_SIZE),
                                         QgsProcessingParameterNumber.Integer, 0, minValue=0),
            QgsProcessingParameterFile(self.EMBEDDING_MODEL, self.label(self.EMBEDDING_MODEL),
                                       extension="fusedeo", optional=True),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_CSV, self.label(self.OUTPUT_CSV), fileFilter="CSV files (*.csv)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_EMBEDDING_MODEL, self.label(self.OUTPUT_EMBEDDING_MODEL),
            fileFilter="FusedEO embedding models (*.fusedeo)", optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUTPUT_FEATURES, self.label(self.OUTPUT_FEATURES), optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputFile(self.OUTPUT_EXCLUDE, self.label(self.OUTPUT_EXCLUDE)))
        self.addOutput(QgsProcessingOutputFile(self.OUTPUT_PROVENANCE, self.label(self.OUTPUT_PROVENANCE)))
        self.addOutput(QgsProcessingOutputNumber(self.ROWS, self.label(self.ROWS)))
        self.addOutput(QgsProcessingOutputNumber(self.SKIPPED, self.label(self.SKIPPED)))

    def checkParameterValues(self, parameters: dict[str, Any],  # noqa: N802 (QGIS API)
                             context: QgsProcessingContext) -> tuple[bool, str]:
        """Reject a missing dataset folder or an unusable compressor before the run."""
        from ...errors import PluginError
        from ...models.compressor import OnnxCompressor
        from ...raster.ssl4eo import scan_dataset

        try:
            scan_dataset(self.parameterAsFile(parameters, self.DATASET_FOLDER, context))
            compressor = self.parameterAsFile(parameters, self.COMPRESSOR, context)
            if compressor:
                OnnxCompressor.from_file(compressor)
        except PluginError as err:
            return False, str(err)
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Read the parameters, embed the dataset and return the output paths."""
        from ...models.ssl4eo_run import Ssl4eoRequest, run_ssl4eo

        request = Ssl4eoRequest(
            dataset_folder=self.parameterAsFile(parameters, self.DATASET_FOLDER, context),
            encoders=self.parameterAsEnumStrings(parameters, self.ENCODERS, context),
            output_csv=self.parameterAsFileOutput(parameters, self.OUTPUT_CSV, context),
            dimensions=self.parameterAsInt(parameters, self.DIMENSIONS, context),
            s2_offset=self.parameterAsEnumString(parameters, self.S2_OFFSET, context),
            device=self.parameterAsEnumString(parameters, self.DEVICE, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            compressor_path=self.parameterAsFile(parameters, self.COMPRESSOR, context) or None,
            embedding_model_path=self.parameterAsFile(parameters, self.EMBEDDING_MODEL, context) or None,
            output_model_path=self.parameterAsFileOutput(parameters, self.OUTPUT_EMBEDDING_MODEL, context) or None,
            output_features_path=self.parameterAsFileOutput(parameters, self.OUTPUT_FEATURES, context) or None,
            weights_dir=str(default_weights_dir()),
        )

        # Cancelling is an outcome: a fitting run has written nothing, a resumable run keeps its rows.
        try:
            with self.interrupt_cancels(feedback):
                result = self.run_core(run_ssl4eo, request, FeedbackReporter(feedback))
        except RunCancelledError as err:
            feedback.pushInfo(str(err))
            return {}

        outputs: dict[str, Any] = {
            self.OUTPUT_CSV: result.output_csv,
            self.OUTPUT_EXCLUDE: result.exclude_path,
            self.OUTPUT_PROVENANCE: result.provenance_path,
            self.ROWS: result.rows_written + result.rows_resumed,
            self.SKIPPED: len(result.skipped),
        }
        if result.output_model_path:
            outputs[self.OUTPUT_EMBEDDING_MODEL] = result.output_model_path
        if request.output_features_path:
            outputs[self.OUTPUT_FEATURES] = request.output_features_path
        return outputs
