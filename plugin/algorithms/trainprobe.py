"""``fusedeo:trainprobe``: train a linear probe from an embedding raster and labels."""

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterField,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from ...errors import PluginError, RunCancelledError
from ...models.probe_workflow import DEFAULT_MIN_SAMPLES, LabelSource, train_probe
from ...models.probes import TASKS
from ...raster.labels import MIN_COVERED_FRACTION, parse_class_values
from ..feedback import FeedbackReporter
from .base import FusedEOAlgorithm, layer_file_path


class TrainProbeAlgorithm(FusedEOAlgorithm):
    """Train a ridge or logistic probe on labelled patches and export it as ONNX."""

    EMBEDDINGS = "EMBEDDINGS"
    LABELS_RASTER = "LABELS_RASTER"
    CLASS_VALUES = "CLASS_VALUES"
    LABELS_VECTOR = "LABELS_VECTOR"
    FIELD = "FIELD"
    TASK = "TASK"
    TASK_NAME = "TASK_NAME"
    MIN_SAMPLES = "MIN_SAMPLES"
    OUTPUT_PROBE = "OUTPUT_PROBE"
    OUTPUT_REPORT = "OUTPUT_REPORT"

    ALGORITHM_ID = "trainprobe"
    DISPLAY_NAME = "Train linear probe"
    GROUP = "Probes"
    GROUP_ID = "probes"
    SUMMARY = (
        "This algorithm trains a linear probe that predicts a label from the embedding of a "
        "patch. It takes an embedding raster from Compute seasonal embeddings and labels as a "
        "raster or as points or polygons with a numeric field, reprojected onto the embedding "
        "grid when their CRS differs. Regression fits ridge regression and classification fits "
        "binary logistic regression, both on standardised embeddings with the penalty chosen by "
        "cross-validation. Skill is measured the NeuCo-Bench way: 40 shuffle splits that hold out "
        "10 % of the samples (random_state 42), R² or F1 per split, and Q = 2·mean/(0.02+std). "
        "The final probe is fitted on all samples and written as ONNX (embedding in, prediction "
        "in label units or probability of class 1 out) with its task, label range and skill in "
        "the metadata, beside an HTML report with a predicted-against-true plot. Patches whose "
        "embedding is nodata or that have no label are left out and counted in the log."
    )
    PARAMETER_HELP = {
        EMBEDDINGS: (
            "Embedding raster",
            "Output of Compute seasonal embeddings: one band per embedding dimension, one pixel per patch.",
        ),
        LABELS_RASTER: (
            "Label raster",
            "Labels as a raster (band 1). Continuous labels give each patch the mean of its "
            "labelled pixels; with class values, each patch gets the fraction of its labelled "
            f"pixels in those classes. A patch needs at least {MIN_COVERED_FRACTION:.0%} of its "
            "pixels labelled (nodata is unlabelled). Give this or a label vector layer, not both.",
        ),
        CLASS_VALUES: (
            "Class values",
            "Comma-separated integer class codes of a categorical label raster, for example "
            "11 for annual cropland in the WorldCereal legend. The label becomes the fraction of "
            "these classes per patch, and the raster is resampled with nearest neighbour. Leave "
            "empty for a continuous label raster.",
        ),
        LABELS_VECTOR: (
            "Label vector layer",
            "Points or polygons with a numeric label field. A point labels the patch (output "
            "pixel) it falls in, and several points in one patch are averaged. A polygon labels "
            f"the patches it covers by at least {MIN_COVERED_FRACTION:.0%}, with the mean over "
            "the covered part where polygons meet. Give this or a label raster, not both.",
        ),
        FIELD: ("Label field", "Numeric field of the label vector layer holding the label."),
        TASK: (
            "Task",
            "regression predicts the label in its own units. classification predicts the "
            "probability of class 1; labels must be 0 and 1, and a patch is class 1 when its "
            "label (or class fraction) is at least 0.5.",
        ),
        TASK_NAME: (
            "Task name",
            "Name stored in the probe and used as the band name of predictions, for example cropland_fraction.",
        ),
        MIN_SAMPLES: (
            "Minimum number of samples",
            "Minimum number of labelled patches with valid embeddings; fewer is an error.",
        ),
        OUTPUT_PROBE: ("Probe", "ONNX file of the probe, for Apply linear probe."),
        OUTPUT_REPORT: (
            "Report",
            "HTML report with the skill numbers and a predicted-against-true plot.",
        ),
    }

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API)
        """Declare the parameters."""
        self.addParameter(
            QgsProcessingParameterRasterLayer(self.EMBEDDINGS, self.label(self.EMBEDDINGS))
        )
        self.addParameter(
            QgsProcessingParameterRasterLayer(
                self.LABELS_RASTER, self.label(self.LABELS_RASTER), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.CLASS_VALUES, self.label(self.CLASS_VALUES), optional=True
            )
        )
        self.addParameter(
            QgsProcessingParameterVectorLayer(
                self.LABELS_VECTOR,
                self.label(self.LABELS_VECTOR),
                [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon],
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterField(
                self.FIELD,
                self.label(self.FIELD),
                parentLayerParameterName=self.LABELS_VECTOR,
                type=QgsProcessingParameterField.Numeric,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.TASK,
                self.label(self.TASK),
                options=list(TASKS),
                defaultValue=TASKS[0],
                usesStaticStrings=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterString(
                self.TASK_NAME, self.label(self.TASK_NAME), defaultValue="probe"
            )
        )
        min_samples = QgsProcessingParameterNumber(
            self.MIN_SAMPLES,
            self.label(self.MIN_SAMPLES),
            type=QgsProcessingParameterNumber.Integer,
            defaultValue=DEFAULT_MIN_SAMPLES,
            minValue=3,
        )
        min_samples.setFlags(min_samples.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(min_samples)
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_PROBE, self.label(self.OUTPUT_PROBE), fileFilter="ONNX files (*.onnx)"
            )
        )
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_REPORT, self.label(self.OUTPUT_REPORT), fileFilter="HTML files (*.html)"
            )
        )

    def checkParameterValues(  # noqa: N802 (QGIS API)
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        """Reject both or neither label input, a vector without field and bad class codes."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        try:
            self._label_source(parameters, context, require_layers=False).check()
        except (PluginError, QgsProcessingException) as err:
            return False, str(err)
        return True, ""

    def _label_source(
        self, parameters: dict[str, Any], context: QgsProcessingContext, require_layers: bool = True
    ) -> LabelSource:
        """Read the label parameters into a LabelSource (paths of the layers given)."""
        raster = self.parameterAsRasterLayer(parameters, self.LABELS_RASTER, context)
        vector = self.parameterAsVectorLayer(parameters, self.LABELS_VECTOR, context)
        if require_layers and parameters.get(self.LABELS_RASTER) and raster is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.LABELS_RASTER))
        if require_layers and parameters.get(self.LABELS_VECTOR) and vector is None:
            raise QgsProcessingException(self.invalidSourceError(parameters, self.LABELS_VECTOR))
        class_text = self.parameterAsString(parameters, self.CLASS_VALUES, context).strip()
        class_values = parse_class_values(class_text) if class_text else None
        return LabelSource(
            raster_path=layer_file_path(raster, self.LABELS_RASTER) if raster is not None else None,
            class_values=class_values,
            vector_path=layer_file_path(vector, self.LABELS_VECTOR) if vector is not None else None,
            field_name=self.parameterAsString(parameters, self.FIELD, context) or None,
        )

    def processAlgorithm(  # noqa: N802 (QGIS API)
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """Train the probe and write the ONNX file and the report."""
        embeddings = self.parameterAsRasterLayer(parameters, self.EMBEDDINGS, context)
        if embeddings is None:
            raise QgsProcessingException(self.invalidRasterError(parameters, self.EMBEDDINGS))
        embeddings_path = layer_file_path(embeddings, self.EMBEDDINGS)
        source = self.run_core(self._label_source, parameters, context)
        task = self.parameterAsEnumString(parameters, self.TASK, context)
        task_name = self.parameterAsString(parameters, self.TASK_NAME, context).strip() or "probe"
        min_samples = self.parameterAsInt(parameters, self.MIN_SAMPLES, context)
        probe_path = self.parameterAsFileOutput(parameters, self.OUTPUT_PROBE, context)
        report_path = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)

        # Training is in the core; a cancel is an outcome and leaves no file behind.
        reporter = FeedbackReporter(feedback)
        try:
            with self.interrupt_cancels(feedback):
                result = self.run_core(
                    train_probe,
                    embeddings_path,
                    source,
                    task,
                    task_name,
                    probe_path,
                    report_path,
                    reporter,
                    min_samples=min_samples,
                )
        except RunCancelledError as err:
            feedback.pushWarning(str(err))
            return {}
        feedback.pushInfo(
            self.tr("Probe written to {}; report written to {}.").format(
                result.probe_path, result.report_path
            )
        )
        return {self.OUTPUT_PROBE: result.probe_path, self.OUTPUT_REPORT: result.report_path}
