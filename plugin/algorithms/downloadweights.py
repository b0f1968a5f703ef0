"""``fusedeo:downloadweights``: fetch or import encoder checkpoints into the weight store."""

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFolder,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsSettings,
)

from ...models.encoders import ENCODER_NAMES, encoder_card
from ...models.weights import WEIGHTS_DIR_ENV, fetch_encoder_weights, licence_requires_acceptance
from ..feedback import FeedbackReporter
from .base import FusedEOAlgorithm

# MOSAIKS draws random kernels and has no checkpoint to fetch.
PRETRAINED_ENCODERS: tuple[str, ...] = tuple(name for name in ENCODER_NAMES if name != "mosaiks")


WEIGHTS_DIR_SETTING = "fusedeo/weights_dir"
"""QgsSettings key of the weight store folder (FUSEDEO_WEIGHTS_DIR overrides it)."""


def default_weights_dir() -> Path:
    """Return the weight store folder: the plugin setting, else a folder in the active QGIS profile."""
    configured = str(QgsSettings().value(WEIGHTS_DIR_SETTING, "") or "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path(QgsApplication.qgisSettingsDirPath()) / "fusedeo" / "weights"


class DownloadWeightsAlgorithm(FusedEOAlgorithm):
    """Download or import foundation-model checkpoints, verified by sha256."""

    ENCODERS = "ENCODERS"
    SOURCE_FILE = "SOURCE_FILE"
    ACCEPT_LICENCE = "ACCEPT_LICENCE"
    OUTPUT_FOLDER = "OUTPUT_FOLDER"
    FILES = "FILES"

    ALGORITHM_ID = "downloadweights"
    DISPLAY_NAME = "Download encoder weights"
    GROUP = "Setup"
    GROUP_ID = "setup"
    SUMMARY = (
        "This algorithm downloads the checkpoints of the selected foundation-model encoders "
        "into the FusedEO weight cache, or imports a local copy of one checkpoint, and checks "
        "each file's size and sha256 against the model card before keeping it. Interrupted "
        "downloads resume where they stopped. Each checkpoint's licence is shown first. The "
        "Scale-MAE checkpoint is published without a size and with only the first 8 digits of its "
        "sha256, so it is not downloaded: download it yourself and import it with SOURCE_FILE. The "
        f"cache folder is the environment variable {WEIGHTS_DIR_ENV} when set, else the plugin setting "
        "fusedeo/weights_dir, else <QGIS profile>/fusedeo/weights. Fusedeo:embed loads weights only from "
        "this cache."
    )
    PARAMETER_HELP = {
        ENCODERS: (
            "Encoders",
            "Encoders whose checkpoints to fetch: croma, dofa, scalemae, copernicusfm, prithvi. "
            "MOSAIKS needs no checkpoint.",
        ),
        SOURCE_FILE: (
            "Local checkpoint file to import (optional)",
            "A checkpoint downloaded by other means, imported instead of downloading. Select "
            "exactly one encoder; the file must have the size and sha256 of that encoder's card (for "
            "Scale-MAE, the published sha256 prefix).",
        ),
        ACCEPT_LICENCE: (
            "Accept non-commercial licences",
            "Whether to accept the CC-BY-NC-4.0 licence of the Scale-MAE weights (non-commercial "
            "use only). Without it, Scale-MAE weights are not imported.",
        ),
        OUTPUT_FOLDER: ("Weight cache folder", "The folder that holds the verified checkpoints."),
        FILES: ("Verified files", "The verified checkpoint paths, separated by semicolons."),
    }

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API)
        """Declare the parameters and outputs."""
        self.addParameter(
            QgsProcessingParameterEnum(
                self.ENCODERS,
                self.label(self.ENCODERS),
                options=list(PRETRAINED_ENCODERS),
                allowMultiple=True,
                usesStaticStrings=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterFile(
                self.SOURCE_FILE,
                self.label(self.SOURCE_FILE),
                behavior=QgsProcessingParameterFile.File,
                optional=True,
            )
        )
        self.addParameter(
            QgsProcessingParameterBoolean(self.ACCEPT_LICENCE, self.label(self.ACCEPT_LICENCE), defaultValue=False)
        )
        self.addOutput(QgsProcessingOutputFolder(self.OUTPUT_FOLDER, self.label(self.OUTPUT_FOLDER)))
        self.addOutput(QgsProcessingOutputString(self.FILES, self.label(self.FILES)))

    def checkParameterValues(  # noqa: N802 (QGIS API)
        self, parameters: dict[str, Any], context: QgsProcessingContext
    ) -> tuple[bool, str]:
        """Reject a missing selection, a file with several encoders and unaccepted licences."""
        names = self.parameterAsEnumStrings(parameters, self.ENCODERS, context)
        source = self.parameterAsFile(parameters, self.SOURCE_FILE, context)
        if not names:
            return False, self.tr("ENCODERS: select at least one encoder.")
        if source and len(names) != 1:
            return False, self.tr(
                "SOURCE_FILE: a local file can be imported for one encoder at a time; "
                "select only the encoder the file belongs to."
            )
        if not self.parameterAsBool(parameters, self.ACCEPT_LICENCE, context):
            for name in names:
                weights = encoder_card(name).weights
                if weights is not None and licence_requires_acceptance(weights):
                    return False, self.tr(
                        "ACCEPT_LICENCE: the {} weights are licensed {} (non-commercial use only); "
                        "set ACCEPT_LICENCE to True to accept the licence, or deselect {}."
                    ).format(name, weights.licence, name)
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(  # noqa: N802 (QGIS API)
        self, parameters: dict[str, Any], context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> dict[str, Any]:
        """Fetch or import the checkpoints and return the cache folder and files."""
        names = self.parameterAsEnumStrings(parameters, self.ENCODERS, context)
        source = self.parameterAsFile(parameters, self.SOURCE_FILE, context) or None
        accept_licence = self.parameterAsBool(parameters, self.ACCEPT_LICENCE, context)
        reporter = FeedbackReporter(feedback)

        with self.interrupt_cancels(feedback):
            folder, files = self.run_core(
                fetch_encoder_weights,
                list(names),
                default_weights_dir(),
                reporter,
                source_file=source,
                accept_licence=accept_licence,
            )
        return {self.OUTPUT_FOLDER: str(folder), self.FILES: ";".join(str(path) for path in files)}
