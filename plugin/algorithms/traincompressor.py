"""``fusedeo:traincompressor``: train an autoencoder compressor on pooled feature stores."""

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ...errors import PluginError, RunCancelledError
from ...models.autoencoder import AutoencoderConfig
from ...models.compressor_training import (
    AUTO,
    CONDITIONING_CHOICES,
    CompressorTrainingRequest,
    check_training_request,
    parse_block_weights,
    train_compressor,
)
from ...models.device import DEVICE_CHOICES
from ..feedback import FeedbackReporter
from .base import FusedEOAlgorithm


def split_folders(text: str) -> list[str]:
    """Return the folders of a ';'-separated list, without blanks."""
    return [part.strip() for part in text.split(";") if part.strip()]


class TrainCompressorAlgorithm(FusedEOAlgorithm):
    """Train the LayerNorm → 2048 → K autoencoder and export its encoder as an ONNX compressor."""

    FEATURES = "FEATURES"
    EXTRA_FEATURES = "EXTRA_FEATURES"
    DIMENSIONS = "DIMENSIONS"
    EPOCHS = "EPOCHS"
    SEED = "SEED"
    LABELS_FOLDER = "LABELS_FOLDER"
    OUTPUT_CONDITIONING = "OUTPUT_CONDITIONING"
    BLOCK_WEIGHTS = "BLOCK_WEIGHTS"
    HOLDOUT_FRACTION = "HOLDOUT_FRACTION"
    CHECKPOINT_INTERVAL = "CHECKPOINT_INTERVAL"
    DEVICE = "DEVICE"
    OUTPUT_COMPRESSOR = "OUTPUT_COMPRESSOR"
    OUTPUT_REPORT = "OUTPUT_REPORT"

    ALGORITHM_ID = "traincompressor"
    DISPLAY_NAME = "Train autoencoder compressor"
    GROUP = "Embeddings"
    GROUP_ID = "embeddings"
    SUMMARY = (
        "This algorithm trains an autoencoder compressor on fused vectors kept by Compute seasonal embeddings "
        "(OUTPUT_FEATURES), pooled over one or more feature stores whose encoders and fitted encoder parts "
        "match. The encoder is LayerNorm over the fused vector, dropout 0.1, Linear to 2048, GELU, dropout 0.1 "
        "and Linear to DIMENSIONS; the decoder is one Linear layer. The loss is the per-block MSE with block "
        "weights, and the optimiser AdamW (learning rate 1e-4, weight decay 0.05, batch 32, learning rate "
        "times 0.1 at 60 % and 90 % of the steps). A seeded share of the rows is held out. At regular "
        "checkpoints the embeddings are scored: with NeuCo-Bench labels by the NeuCo-Bench protocol itself "
        "(mean Q of the neuco probe over the labelled patches), otherwise by ridge probes on the held-out rows "
        "against targets derived from the fused vectors. The checkpoint with the best score is kept, not the "
        "one with the lowest reconstruction error. The encoder and the "
        "output conditioning are written as an ONNX compressor (input features [N, D], output embedding "
        "[N, DIMENSIONS]) for the COMPRESSOR parameter of Compute seasonal embeddings, with the layout, the "
        "training summary and the sha256 of the training features in its metadata. On the CPU the same "
        "inputs and seed give the same model."
    )
    PARAMETER_HELP = {
        FEATURES: ("Feature store", "Folder written by Compute seasonal embeddings as OUTPUT_FEATURES."),
        EXTRA_FEATURES: (
            "More feature stores",
            "Further feature-store folders separated by ';', pooled with the first. Every store must have the "
            "same fused layout and fitted encoder parts (embed with the same EMBEDDING_MODEL), and ids must not "
            "repeat across stores.",
        ),
        DIMENSIONS: ("Embedding dimensions", "Width of the embedding the compressor outputs."),
        EPOCHS: ("Epochs", "Passes over the training rows."),
        SEED: ("Seed", "Seed of the held-out split, weight initialisation, dropout and shuffling."),
        LABELS_FOLDER: (
            "NeuCo-Bench labels folder",
            "Optional folder of label files named <task>__regression.csv or <task>__classification.csv with "
            "columns id and label, where id is a feature-store id (for example embedding/0_3). When given, "
            "checkpoints and the output conditioning are chosen by the NeuCo-Bench score on these tasks (the "
            "neuco probe with 40 shuffle splits over every labelled patch, mean Q; classification labels must "
            "be 0 and 1, and a task needs at least 20 labelled patches); otherwise checkpoints are chosen by "
            "ridge probes on label-free targets.",
        ),
        OUTPUT_CONDITIONING: (
            "Output conditioning",
            "Affine map baked into the compressor after the encoder: as_trained (none), pca_rotated (centred "
            "and rotated onto the principal axes of the training embeddings) or whitened (rotated and scaled "
            "to unit variance). auto lets the proxy choose when labels are given and uses pca_rotated otherwise.",
        ),
        BLOCK_WEIGHTS: (
            "Block weights",
            "Loss weight of each encoder block: empty or inverse_variance (each block weighted by the inverse "
            "of its variance, so wide or large-valued blocks do not dominate), equal, or name=weight pairs "
            "separated by commas, for example mosaiks=1,prithvi=2.",
        ),
        HOLDOUT_FRACTION: ("Held-out fraction", "Share of the rows held out to score checkpoints."),
        CHECKPOINT_INTERVAL: (
            "Checkpoint interval (epochs)",
            "Epochs between scored checkpoints; 0 scores about 32 checkpoints (every 5 epochs for 160). The last "
            "epoch is always scored.",
        ),
        DEVICE: ("Device", "Where training runs: auto (CUDA when available), cpu or cuda. Only CPU training is "
                 "bit-for-bit reproducible."),
        OUTPUT_COMPRESSOR: ("Compressor", "ONNX file of the compressor, for COMPRESSOR in Compute seasonal "
                            "embeddings."),
        OUTPUT_REPORT: ("Report", "HTML report with the held-out loss and proxy curves and the chosen epoch "
                                  "(optional; the dialog writes a temporary file by default)."),
    }

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API)
        """Declare the parameters."""
        self.addParameter(QgsProcessingParameterFile(
            self.FEATURES, self.label(self.FEATURES), behavior=QgsProcessingParameterFile.Folder))
        self.addParameter(QgsProcessingParameterNumber(
            self.DIMENSIONS, self.label(self.DIMENSIONS), QgsProcessingParameterNumber.Integer, 1024, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.EPOCHS, self.label(self.EPOCHS), QgsProcessingParameterNumber.Integer, 160, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.SEED, self.label(self.SEED), QgsProcessingParameterNumber.Integer, 1337, minValue=0))
        self.addParameter(QgsProcessingParameterFile(
            self.LABELS_FOLDER, self.label(self.LABELS_FOLDER), behavior=QgsProcessingParameterFile.Folder,
            optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.OUTPUT_CONDITIONING, self.label(self.OUTPUT_CONDITIONING), options=list(CONDITIONING_CHOICES),
            defaultValue=AUTO, optional=True, usesStaticStrings=True))
        advanced = [
            QgsProcessingParameterString(self.EXTRA_FEATURES, self.label(self.EXTRA_FEATURES), optional=True),
            QgsProcessingParameterString(self.BLOCK_WEIGHTS, self.label(self.BLOCK_WEIGHTS), optional=True),
            QgsProcessingParameterNumber(self.HOLDOUT_FRACTION, self.label(self.HOLDOUT_FRACTION),
                                         QgsProcessingParameterNumber.Double, 0.2, minValue=0.01, maxValue=0.9),
            QgsProcessingParameterNumber(self.CHECKPOINT_INTERVAL, self.label(self.CHECKPOINT_INTERVAL),
                                         QgsProcessingParameterNumber.Integer, 0, minValue=0),
            QgsProcessingParameterEnum(self.DEVICE, self.label(self.DEVICE), options=list(DEVICE_CHOICES),
                                       defaultValue="auto", usesStaticStrings=True),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_COMPRESSOR, self.label(self.OUTPUT_COMPRESSOR), fileFilter="ONNX files (*.onnx)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_REPORT, self.label(self.OUTPUT_REPORT), fileFilter="HTML files (*.html)", optional=True,
            createByDefault=True))

    def checkParameterValues(self, parameters: dict[str, Any],  # noqa: N802 (QGIS API)
                             context: QgsProcessingContext) -> tuple[bool, str]:
        """Reject unreadable or incompatible stores and bad labels before training."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        from ...models.neuco_proxy import read_labels
        from ...reporting import LoggingReporter
        from ...models.feature_store import FeatureStore, check_compatible

        try:
            request = self._request(parameters, context)
            check_training_request(request)
            stores = [FeatureStore.open(path, self.FEATURES) for path in request.feature_paths]
            for store in stores[1:]:
                check_compatible(store, stores[0].layout, stores[0].encoder_fingerprint,
                                 f"feature store '{stores[0].path}'")
            if request.labels_folder:
                read_labels(request.labels_folder, LoggingReporter(__name__))
        except PluginError as err:
            return False, str(err)
        return True, ""

    def _request(self, parameters: dict[str, Any], context: QgsProcessingContext) -> CompressorTrainingRequest:
        """Read every parameter into a training request."""
        folders = [self.parameterAsFile(parameters, self.FEATURES, context)]
        folders += split_folders(self.parameterAsString(parameters, self.EXTRA_FEATURES, context))
        config = AutoencoderConfig(
            dimensions=self.parameterAsInt(parameters, self.DIMENSIONS, context),
            epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
            seed=self.parameterAsInt(parameters, self.SEED, context),
            checkpoint_interval=self.parameterAsInt(parameters, self.CHECKPOINT_INTERVAL, context),
        )
        return CompressorTrainingRequest(
            feature_paths=[folder for folder in folders if folder],
            output_path=self.parameterAsFileOutput(parameters, self.OUTPUT_COMPRESSOR, context),
            report_path=self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context) or None,
            config=config,
            labels_folder=self.parameterAsFile(parameters, self.LABELS_FOLDER, context) or None,
            conditioning=self.parameterAsEnumString(parameters, self.OUTPUT_CONDITIONING, context) or AUTO,
            block_weights=parse_block_weights(self.parameterAsString(parameters, self.BLOCK_WEIGHTS, context)),
            holdout_fraction=self.parameterAsDouble(parameters, self.HOLDOUT_FRACTION, context),
            device=self.parameterAsEnumString(parameters, self.DEVICE, context),
        )

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Read the parameters, train the compressor and return the output paths."""
        request = self.run_core(self._request, parameters, context)
        if not request.feature_paths:
            raise QgsProcessingException(self.tr("FEATURES: no feature store folder is set."))

        # Cancelling is an outcome, not a failure: the core writes nothing until training has finished.
        try:
            with self.interrupt_cancels(feedback):
                result = self.run_core(train_compressor, request, FeedbackReporter(feedback))
        except RunCancelledError as err:
            feedback.pushInfo(str(err))
            return {}

        feedback.pushInfo(self.tr("Compressor written to {} (epoch {}, {} conditioning); report written to {}.")
                          .format(result.output_path, result.trained.chosen_epoch, result.conditioning,
                                  result.report_path))
        return {self.OUTPUT_COMPRESSOR: result.output_path, self.OUTPUT_REPORT: result.report_path}
