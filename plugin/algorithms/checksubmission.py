"""``fusedeo:checksubmission`` — Check a NeuCo-Bench CSV against a dataset folder."""

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
)

from .base import FusedEOAlgorithm


class CheckSubmissionAlgorithm(FusedEOAlgorithm):
    """NeuCo-Bench CSV (+ dataset folder) → an error naming every problem, or the row and dimension counts."""

    INPUT = "INPUT"
    DATASET_FOLDER = "DATASET_FOLDER"
    DIMENSIONS = "DIMENSIONS"
    EXCLUDE_FILE = "EXCLUDE_FILE"
    ROWS = "ROWS"
    DIMENSIONS_FOUND = "DIMENSIONS_FOUND"

    ALGORITHM_ID = "checksubmission"
    DISPLAY_NAME = "Check a NeuCo-Bench submission"
    GROUP = "Embeddings"
    GROUP_ID = "embeddings"
    SUMMARY = (
        "This algorithm checks a NeuCo-Bench CSV before it is submitted or scored: a column id and dimension "
        "columns 0 … N-1, the same number of fields in every row, only finite float32 numbers (NeuCo-Bench "
        "silently reads NaN and text as 0), unique ids without the .zarr.zip suffix and, with a dataset "
        "folder, every id of the dataset present unless listed in the exclude file. It fails with a message "
        "that names every problem, and otherwise returns the number of rows and dimensions."
    )
    PARAMETER_HELP = {
        INPUT: ("NeuCo-Bench CSV", "The CSV to check."),
        DATASET_FOLDER: ("Dataset folder", "Optional SSL4EO-S12 dataset folder (s1, s2l1c, s2l2a) whose ids must "
                         "all appear in the CSV."),
        DIMENSIONS: ("Required dimensions", "Number of dimension columns the CSV must have; 0 accepts any."),
        EXCLUDE_FILE: ("Exclude file", "Optional file of ids (one per line) that may be absent; by default "
                       "<name>.exclude.txt next to the CSV when it exists."),
        ROWS: ("Rows", "Output: number of data rows."),
        DIMENSIONS_FOUND: ("Dimensions", "Output: number of dimension columns."),
    }

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API)
        """Declare the parameters and outputs."""
        self.addParameter(QgsProcessingParameterFile(self.INPUT, self.label(self.INPUT), extension="csv"))
        self.addParameter(QgsProcessingParameterFile(
            self.DATASET_FOLDER, self.label(self.DATASET_FOLDER), behavior=QgsProcessingParameterFile.Folder,
            optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.DIMENSIONS, self.label(self.DIMENSIONS), QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterFile(
            self.EXCLUDE_FILE, self.label(self.EXCLUDE_FILE), optional=True))
        self.addOutput(QgsProcessingOutputNumber(self.ROWS, self.label(self.ROWS)))
        self.addOutput(QgsProcessingOutputNumber(self.DIMENSIONS_FOUND, self.label(self.DIMENSIONS_FOUND)))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Check the CSV and fail with every problem found."""
        from pathlib import Path

        from ...models.submission import check_submission

        csv_path = self.parameterAsFile(parameters, self.INPUT, context)
        dataset_folder = self.parameterAsFile(parameters, self.DATASET_FOLDER, context) or None
        dimensions = self.parameterAsInt(parameters, self.DIMENSIONS, context) or None
        exclude = (self.parameterAsFile(parameters, self.EXCLUDE_FILE, context)
                   or str(Path(csv_path).with_name(f"{Path(csv_path).stem}.exclude.txt")))

        check = self.run_core(check_submission, csv_path, dataset_folder, dimensions, exclude)
        for note in check.notes:
            feedback.pushInfo(note)
        if not check.ok:
            raise QgsProcessingException("\n".join(check.messages()[: 1 + len(check.problems)]))
        feedback.pushInfo(check.messages()[0])
        return {self.ROWS: check.rows, self.DIMENSIONS_FOUND: check.dimensions}
