"""``fusedeo:applyprobe``: map a linear probe's predictions over an embedding raster."""

from typing import Any

from qgis.core import (
    QgsMapLayer,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingParameterFile,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ...errors import PluginError, RunCancelledError
from ...models.probe_workflow import apply_probe, check_probe_matches
from ...models.probes import load_probe
from ...raster.embedding_raster import open_embedding_raster
from ...raster.prediction_raster import style_path_for
from ..feedback import FeedbackReporter
from .base import FusedEOAlgorithm, layer_file_path

# Processing keeps only a C++ pointer to a layer post-processor, so the Python
# objects are held here until they have styled their layer.
_POST_PROCESSORS: dict[str, "PredictionStylePostProcessor"] = {}


class PredictionStylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Load the sidecar QML style into a prediction layer when Processing adds it to the project.

    Processing calls this in the main thread after the run, so the style is
    applied without touching the project from the worker thread.
    """

    def __init__(self, style_path: str, output_path: str) -> None:
        """Remember the style to load for the layer of ``output_path``."""
        super().__init__()
        self.style_path = style_path
        self.output_path = output_path

    def postProcessLayer(  # noqa: N802 (QGIS API)
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        """Apply the style to ``layer`` and release this object."""
        message, ok = layer.loadNamedStyle(self.style_path)
        if not ok:
            feedback.pushWarning(f"Could not apply the style {self.style_path}: {message}")
        layer.triggerRepaint()
        _POST_PROCESSORS.pop(self.output_path, None)


class ApplyProbeAlgorithm(FusedEOAlgorithm):
    """Predict a probe's target for every patch of an embedding raster."""

    EMBEDDINGS = "EMBEDDINGS"
    PROBE = "PROBE"
    OUTPUT = "OUTPUT"

    ALGORITHM_ID = "applyprobe"
    DISPLAY_NAME = "Apply linear probe"
    GROUP = "Probes"
    GROUP_ID = "probes"
    SUMMARY = (
        "This algorithm applies a probe from Train linear probe to an embedding raster from "
        "Compute seasonal embeddings and writes a prediction raster on the embedding grid (same "
        "CRS, extent and pixel size, one pixel per patch): one float32 band in the label's units, "
        "or the probability of class 1 for a classification probe, with nodata (NaN) where the "
        "embeddings are nodata. A colour-ramp style over the probe's label range is saved beside "
        "the output as a .qml file, which QGIS applies when it loads the layer. The probe must "
        "have been trained on embeddings of the same width and the same embedding model "
        "(fingerprint)."
    )
    PARAMETER_HELP = {
        EMBEDDINGS: (
            "Embedding raster",
            "Output of Compute seasonal embeddings, made with the embedding model the probe was trained on.",
        ),
        PROBE: ("Probe", "ONNX probe written by Train linear probe."),
        OUTPUT: (
            "Predictions",
            "GeoTIFF of predictions in label units (probability of class 1 for classification), "
            "with a .qml style beside it.",
        ),
    }

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API)
        """Declare the parameters."""
        self.addParameter(
            QgsProcessingParameterRasterLayer(self.EMBEDDINGS, self.label(self.EMBEDDINGS))
        )
        self.addParameter(
            QgsProcessingParameterFile(self.PROBE, self.label(self.PROBE), extension="onnx")
        )
        self.addParameter(
            QgsProcessingParameterRasterDestination(self.OUTPUT, self.label(self.OUTPUT))
        )

    def checkParameterValues(  # noqa: N802 (QGIS API)
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        """Check before the run that the probe loads and fits the embedding raster."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        embeddings = self.parameterAsRasterLayer(parameters, self.EMBEDDINGS, context)
        probe_path = self.parameterAsFile(parameters, self.PROBE, context)
        if embeddings is None or not probe_path:
            # A model input that is only known at run time; processAlgorithm checks it.
            return True, ""
        try:
            probe = load_probe(probe_path)
            embedding = open_embedding_raster(layer_file_path(embeddings, self.EMBEDDINGS))
            check_probe_matches(probe, embedding)
        except (PluginError, QgsProcessingException) as err:
            return False, str(err)
        return True, ""

    def processAlgorithm(  # noqa: N802 (QGIS API)
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """Write the prediction raster and its style."""
        embeddings = self.parameterAsRasterLayer(parameters, self.EMBEDDINGS, context)
        if embeddings is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.EMBEDDINGS))
        embeddings_path = layer_file_path(embeddings, self.EMBEDDINGS)
        probe_path = self.parameterAsFile(parameters, self.PROBE, context)
        output_path = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)

        # A cancel is an outcome, not a failure: the core has removed the partial file.
        try:
            with self.interrupt_cancels(feedback):
                result = self.run_core(
                    apply_probe, embeddings_path, probe_path, output_path, FeedbackReporter(feedback)
                )
        except RunCancelledError as err:
            feedback.pushWarning(str(err))
            return {}

        # Processing loads the layer in the main thread after the run; style it there.
        if context.willLoadLayerOnCompletion(output_path):
            details = context.layerToLoadOnCompletionDetails(output_path)
            details.name = result.probe.task_name
            post_processor = PredictionStylePostProcessor(
                str(style_path_for(output_path)), output_path
            )
            _POST_PROCESSORS[output_path] = post_processor
            details.setPostProcessor(post_processor)
        return {self.OUTPUT: result.output_path}
