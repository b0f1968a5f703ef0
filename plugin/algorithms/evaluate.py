"""``fusedeo:evaluate``: score an embeddings CSV with the NeuCo-Bench protocol."""

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputFolder,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterString,
)

from ...errors import PluginError, RunCancelledError
from ...neuco.evaluate import EvaluationConfig, check_inputs, evaluate
from ...neuco.protocol import DEFAULT_K_FOLDS, PROBES
from ..feedback import FeedbackReporter
from .base import FusedEOAlgorithm


class EvaluateAlgorithm(FusedEOAlgorithm):
    """Probe every task of a labels folder on the embeddings and rank the run in its phase."""

    EMBEDDINGS_CSV = "EMBEDDINGS_CSV"
    LABELS_FOLDER = "LABELS_FOLDER"
    PROBE = "PROBE"
    K_FOLDS = "K_FOLDS"
    PHASE = "PHASE"
    METHOD_NAME = "METHOD_NAME"
    EMBEDDING_DIM = "EMBEDDING_DIM"
    EXCLUDE_FILE = "EXCLUDE_FILE"
    TASKS = "TASKS"
    STANDARDIZE = "STANDARDIZE"
    NORMALIZE_LABELS = "NORMALIZE_LABELS"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    OUTPUT_REPORT = "OUTPUT_REPORT"
    RUN_FOLDER = "RUN_FOLDER"
    LEADERBOARD = "LEADERBOARD"
    MEAN_Q = "MEAN_Q"

    ALGORITHM_ID = "evaluate"
    DISPLAY_NAME = "Evaluate embeddings (NeuCo-Bench)"
    GROUP = "Benchmark"
    GROUP_ID = "benchmark"
    SUMMARY = (
        "This algorithm scores embeddings the way NeuCo-Bench does. It takes an embeddings CSV (an id column "
        "and one column per dimension, as written for NeuCo-Bench) and a folder of label files named "
        "<task>__regression.csv or <task>__classification.csv with id and label columns. Each task is probed "
        "on shuffle splits that hold out 10 % of its samples (random_state 42); a split scores R² or F1 on its "
        "held-out samples and the task's Q = 2·mean/(0.02+std). The run's results go to "
        "<output folder>/<phase>/<method>_<time>/ as NeuCo-Bench's per-task JSON files and run summary. Every "
        "run of the phase is then ranked with NeuCo-Bench's rank aggregation into "
        "<output folder>/leaderboards/<phase>/leaderboard.csv, and an HTML report shows Q per run and task, "
        "the mean Q per run and the leaderboard. The neuco probe repeats the reference training (AdamW, 10 "
        "epochs, batch 64, best epoch per split) with all splits of a task trained as one batched model and "
        "matches the reference's scores. The ridge probe fits closed-form ridge models instead. It is faster, "
        "but its scores are its own and cannot be compared with neuco runs."
    )
    PARAMETER_HELP = {
        EMBEDDINGS_CSV: (
            "Embeddings CSV",
            "CSV with an 'id' column and one column per dimension. Columns named by digits only (0, 1, …) are "
            "the dimensions, in numeric order; without them every other column is. '.zarr.zip' and '.zarr' are "
            "removed from ids, and cells that are not numbers are read as 0.",
        ),
        LABELS_FOLDER: (
            "Labels folder",
            "Folder of <task>__<type>.csv files with 'id' and 'label' columns; type is regression (or regr) "
            "or classification (or cls, labels 0 and 1). Rows with an empty label are skipped.",
        ),
        PROBE: (
            "Probe",
            "neuco: NeuCo-Bench's linear layer trained with AdamW (learning rate 0.001, batch 64, 10 epochs), "
            "scored by its best epoch per split; its scores match the reference. ridge: ridge regression, "
            "and a ridge classifier for classification, with the penalty chosen per split by generalised "
            "cross-validation on the split's training samples. From qgis_process or a script, give the name "
            "(PROBE=neuco or PROBE=ridge), not its number.",
        ),
        K_FOLDS: ("Number of splits", "Shuffle splits per task; NeuCo-Bench uses 40."),
        PHASE: (
            "Phase",
            "Name of the group of runs ranked together, for example dev or ablation; runs are stored in a "
            "subfolder of that name.",
        ),
        METHOD_NAME: (
            "Method name",
            "Name of this run in the leaderboard, followed by the date and time. Empty uses the CSV file name.",
        ),
        EMBEDDING_DIM: (
            "Embedding dimension",
            "Zero-pad embeddings with fewer columns to this width; a file with more columns is rejected. "
            "Empty or 0 uses the file's width.",
        ),
        EXCLUDE_FILE: ("Exclude file", "Text file of ids to leave out, one per line."),
        TASKS: ("Tasks", "Comma-separated names of the tasks to score. Empty scores every task."),
        STANDARDIZE: (
            "Standardise embeddings",
            "Whether to subtract the mean of all embedding values and divide by their standard deviation "
            "(one mean and one deviation for the whole file), as NeuCo-Bench does by default.",
        ),
        NORMALIZE_LABELS: (
            "Normalise labels",
            "Whether to min-max scale each task's labels to [0, 1], as NeuCo-Bench does by default.",
        ),
        OUTPUT_FOLDER: (
            "Output folder",
            "Root of the results: <phase>/<method>_<time>/ per run and leaderboards/<phase>/leaderboard.csv.",
        ),
        OUTPUT_REPORT: (
            "Report",
            "HTML report of the phase: heatmap of Q per run and task, mean Q per run, and the leaderboard. "
            "When skipped, it is written to leaderboards/<phase>/report.html in the output folder.",
        ),
    }

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API)
        """Declare the parameters and outputs."""
        self.addParameter(
            QgsProcessingParameterFile(self.EMBEDDINGS_CSV, self.label(self.EMBEDDINGS_CSV), extension="csv")
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.LABELS_FOLDER, self.label(self.LABELS_FOLDER), behavior=QgsProcessingParameterFile.Folder
            )
        )
        self.addParameter(
            QgsProcessingParameterEnum(
                self.PROBE, self.label(self.PROBE), options=list(PROBES), defaultValue=PROBES[0], usesStaticStrings=True
            )
        )
        self.addParameter(
            QgsProcessingParameterNumber(
                self.K_FOLDS,
                self.label(self.K_FOLDS),
                type=QgsProcessingParameterNumber.Integer,
                defaultValue=DEFAULT_K_FOLDS,
                minValue=2,
            )
        )
        self.addParameter(QgsProcessingParameterString(self.PHASE, self.label(self.PHASE), defaultValue="results"))
        self.addParameter(QgsProcessingParameterString(self.METHOD_NAME, self.label(self.METHOD_NAME), optional=True))
        advanced = [
            QgsProcessingParameterNumber(
                self.EMBEDDING_DIM,
                self.label(self.EMBEDDING_DIM),
                type=QgsProcessingParameterNumber.Integer,
                minValue=0,
                optional=True,
            ),
            QgsProcessingParameterFile(self.EXCLUDE_FILE, self.label(self.EXCLUDE_FILE), optional=True),
            QgsProcessingParameterString(self.TASKS, self.label(self.TASKS), optional=True),
            QgsProcessingParameterBoolean(self.STANDARDIZE, self.label(self.STANDARDIZE), defaultValue=True),
            QgsProcessingParameterBoolean(self.NORMALIZE_LABELS, self.label(self.NORMALIZE_LABELS), defaultValue=True),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT_FOLDER, self.label(self.OUTPUT_FOLDER)))
        self.addParameter(
            QgsProcessingParameterFileDestination(
                self.OUTPUT_REPORT,
                self.label(self.OUTPUT_REPORT),
                fileFilter="HTML files (*.html)",
                optional=True,
                createByDefault=False,
            )
        )
        self.addOutput(QgsProcessingOutputFolder(self.RUN_FOLDER, self.tr("Run folder")))
        self.addOutput(QgsProcessingOutputFile(self.LEADERBOARD, self.tr("Leaderboard CSV")))
        self.addOutput(QgsProcessingOutputNumber(self.MEAN_Q, self.tr("Mean Q over the tasks")))

    def checkParameterValues(  # noqa: N802 (QGIS API)
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        """Reject a CSV without an id column, bad label file names, unknown tasks and bad names."""
        ok, message = super().checkParameterValues(parameters, context)
        if not ok:
            return ok, message
        try:
            check_inputs(self._config(parameters, context, output_folder=Path(".")))
        except (PluginError, QgsProcessingException) as err:
            return False, str(err)
        return True, ""

    def _config(
        self, parameters: dict[str, Any], context: QgsProcessingContext, output_folder: Path, report_path: Path | None = None
    ) -> EvaluationConfig:
        """Read the input parameters into an evaluation configuration."""
        embedding_dim = (
            self.parameterAsInt(parameters, self.EMBEDDING_DIM, context)
            if parameters.get(self.EMBEDDING_DIM) not in (None, "")
            else 0
        )
        tasks_text = self.parameterAsString(parameters, self.TASKS, context)
        tasks = tuple(name.strip() for name in tasks_text.split(",") if name.strip())
        exclude_file = self.parameterAsFile(parameters, self.EXCLUDE_FILE, context)
        return EvaluationConfig(
            embeddings_csv=Path(self.parameterAsFile(parameters, self.EMBEDDINGS_CSV, context)),
            labels_folder=Path(self.parameterAsFile(parameters, self.LABELS_FOLDER, context)),
            output_folder=output_folder,
            probe=self.parameterAsEnumString(parameters, self.PROBE, context),
            k_folds=self.parameterAsInt(parameters, self.K_FOLDS, context),
            phase=self.parameterAsString(parameters, self.PHASE, context).strip(),
            method_name=self.parameterAsString(parameters, self.METHOD_NAME, context).strip() or None,
            report_path=report_path,
            embedding_dim=embedding_dim or None,
            exclude_file=Path(exclude_file) if exclude_file else None,
            tasks=tasks or None,
            standardize=self.parameterAsBoolean(parameters, self.STANDARDIZE, context),
            normalize_labels=self.parameterAsBoolean(parameters, self.NORMALIZE_LABELS, context),
        )

    def processAlgorithm(  # noqa: N802 (QGIS API)
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """Score the embeddings, then write the run, the leaderboard and the report."""
        output_folder = Path(self.parameterAsString(parameters, self.OUTPUT_FOLDER, context))
        report_text = self.parameterAsFileOutput(parameters, self.OUTPUT_REPORT, context)
        config = self._config(parameters, context, output_folder, Path(report_text) if report_text else None)

        # The core reads, probes and writes; a cancel is an outcome and writes no run.
        try:
            with self.interrupt_cancels(feedback):
                result = self.run_core(evaluate, config, FeedbackReporter(feedback))
        except RunCancelledError as err:
            feedback.pushWarning(str(err))
            return {}
        feedback.pushInfo(
            self.tr("Mean Q {:.2f} over {} tasks; run written to {}.").format(
                result.overall_q, len(result.task_scores), result.run_folder
            )
        )
        return {
            self.OUTPUT_FOLDER: str(output_folder),
            self.OUTPUT_REPORT: str(result.report_path),
            self.RUN_FOLDER: str(result.run_folder),
            self.LEADERBOARD: str(result.leaderboard_path),
            self.MEAN_Q: result.overall_q,
        }
