"""``fusedeo:embed`` — Compute seasonal embeddings."""

from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ...errors import RunCancelledError
from ...models.device import DEVICE_CHOICES
from ...models.encoders import ENCODER_NAMES
from ...raster.bands import SEASONS, Sensor
from ...raster.grid import Bounds
from ...raster.layers import S2_OFFSET_CHOICES, LayerSpec
from ..feedback import FeedbackReporter
from .base import FusedEOAlgorithm, layer_file_path
from .downloadweights import default_weights_dir

SENSOR_TITLES = {Sensor.S2L2A: "Sentinel-2 L2A", Sensor.S2L1C: "Sentinel-2 L1C", Sensor.S1: "Sentinel-1 GRD"}
SENSOR_HELP = {
    Sensor.S2L2A: "12 bands B01–B09, B8A, B11, B12 as digital numbers (reflectance × 10000) or reflectance "
                  "0–1; bands are matched by description, missing bands are filled",
    Sensor.S2L1C: "13 bands B01–B12 with B8A and B10, as digital numbers or reflectance 0–1",
    Sensor.S1: "bands VV and VH, backscatter in dB or linear power",
}


def layer_parameter_name(sensor: Sensor, season: str) -> str:
    """Return the parameter name of a season layer, for example ``S2L2A_SPRING``."""
    return f"{sensor.name}_{season.upper()}"


LAYER_PARAMETERS: list[tuple[str, Sensor, str]] = [
    (layer_parameter_name(sensor, season), sensor, season)
    for sensor in (Sensor.S2L2A, Sensor.S1, Sensor.S2L1C) for season in SEASONS
]


class EmbedAlgorithm(FusedEOAlgorithm):
    """Seasons of S1/S2 layers → embedding raster, with optional table and embedding model."""

    ENCODERS = "ENCODERS"
    PATCH_SIZE = "PATCH_SIZE"
    STRIDE = "STRIDE"
    MIN_VALID_FRACTION = "MIN_VALID_FRACTION"
    COMPRESSOR = "COMPRESSOR"
    DIMENSIONS = "DIMENSIONS"
    S2_OFFSET = "S2_OFFSET"
    DEVICE = "DEVICE"
    EMBEDDING_MODEL = "EMBEDDING_MODEL"
    EXTENT = "EXTENT"
    OUTPUT = "OUTPUT"
    OUTPUT_TABLE = "OUTPUT_TABLE"
    OUTPUT_EMBEDDING_MODEL = "OUTPUT_EMBEDDING_MODEL"
    OUTPUT_FEATURES = "OUTPUT_FEATURES"

    ALGORITHM_ID = "embed"
    DISPLAY_NAME = "Compute seasonal embeddings"
    GROUP = "Embeddings"
    GROUP_ID = "embeddings"
    SUMMARY = (
        "This algorithm turns up to four seasons (spring Mar–May, summer Jun–Aug, autumn Sep–Nov, winter "
        "Dec–Feb) of Sentinel-1 and Sentinel-2 layers into an embedding raster with one pixel per patch "
        "and one band per embedding dimension. Every layer is warped (bilinear) onto one projected target "
        "grid: the CRS and pixel size of the finest Sentinel-2 layer, or the UTM zone of the area when "
        "that layer is geographic. Each patch of PATCH_SIZE pixels, placed every STRIDE pixels, is encoded "
        "by the selected encoders; the fused vector is compressed by the ONNX compressor (PCA fitted on "
        "this run when none is given). Output pixel (0, 0) covers grid pixels 0 to STRIDE-1 in both "
        "directions. Patches with too few valid pixels are nodata (NaN)."
    )
    PARAMETER_HELP = {
        **{name: (f"{SENSOR_TITLES[sensor]}, {season}",
                  f"{SENSOR_TITLES[sensor]} layer for {season}: {SENSOR_HELP[sensor]}. Optional; at least one "
                  "season layer is required.")
           for name, sensor, season in LAYER_PARAMETERS},
        ENCODERS: ("Encoders", "Encoders whose features are fused, in a fixed block order. mosaiks (random "
                   "convolutional features drawn from this run's valid patches, seed 10012023) needs no "
                   "weights and uses every channel the layers provide."),
        PATCH_SIZE: ("Patch size (pixels)", "Side of the square patch each embedding describes, in pixels of "
                     "the target grid. Default 264 (the SSL4EO-S12 chip size)."),
        STRIDE: ("Stride (pixels)", "Distance between patch origins in pixels of the target grid; the output "
                 "pixel size is STRIDE times the grid pixel size. Default 0: the same as PATCH_SIZE, so "
                 "patches tile the area. A stride larger than PATCH_SIZE leaves gaps, with a warning."),
        MIN_VALID_FRACTION: ("Minimum valid fraction", "Patches whose fraction of valid pixels (mean over the "
                             "given seasons) is below this value get nodata and are left out of kernel "
                             "sampling and PCA fitting."),
        COMPRESSOR: ("Compressor (.onnx)", "ONNX compressor with one input [N, D] of fused vectors and one "
                     "output [N, K], for example from Train autoencoder compressor; it replaces the compressor "
                     "of EMBEDDING_MODEL when both are set. A compressor trained on fitted encoder parts (mosaiks "
                     "kernels) needs the EMBEDDING_MODEL that made its training features. When empty, PCA to "
                     "DIMENSIONS is fitted on this run's patches."),
        DIMENSIONS: ("Embedding dimensions", "Number of PCA components when no compressor is given (default "
                     "1024); capped at the number of valid patches minus one, with a warning."),
        S2_OFFSET: ("Sentinel-2 offset", "Whether Sentinel-2 values carry ESA's +1000 offset (products of "
                    "processing baseline 04.00 or later). auto reads MTD_MSIL1C.xml or MTD_MSIL2A.xml next "
                    "to the layer and otherwise assumes no offset, with a warning."),
        DEVICE: ("Device", "Where encoders run: auto (CUDA when available), cpu or cuda (an error when no "
                 "CUDA device is usable)."),
        EMBEDDING_MODEL: ("Embedding model to reuse", "Embedding model file written by an earlier run "
                          "(OUTPUT_EMBEDDING_MODEL). Its encoders, fitted kernels and compressor are reused, so "
                          "this area lands in the same embedding space and the same probes apply."),
        EXTENT: ("Processing extent", "Optional area to restrict the run to; by default the common area of "
                 "all layers."),
        OUTPUT: ("Embedding raster", "Float32 GeoTIFF, one band per dimension, NaN nodata, with provenance "
                 "in its metadata."),
        OUTPUT_TABLE: ("NeuCo-Bench table", "Optional CSV with a column id (patch row_column) and columns "
                       "0 … N-1, one row per valid patch."),
        OUTPUT_EMBEDDING_MODEL: ("Embedding model", "Optional file (.fusedeo, a zip archive) with the "
                                 "encoders' settings, the fitted kernels and the compressor of this run."),
        OUTPUT_FEATURES: ("Feature store", "Optional folder (a Zarr store) that keeps the raw fused vectors of "
                          "the valid patches with their ids, for training a compressor. An existing store is "
                          "appended to when its layout and fitted encoder parts match this run."),
    }

    def initAlgorithm(self, configuration: dict[str, Any] | None = None) -> None:  # noqa: N802 (QGIS API)
        """Declare the parameters."""
        for name, _, _ in LAYER_PARAMETERS:
            self.addParameter(QgsProcessingParameterRasterLayer(name, self.label(name), optional=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.ENCODERS, self.label(self.ENCODERS), options=list(ENCODER_NAMES), allowMultiple=True,
            defaultValue=["mosaiks"], usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.PATCH_SIZE, self.label(self.PATCH_SIZE), QgsProcessingParameterNumber.Integer, 264, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.STRIDE, self.label(self.STRIDE), QgsProcessingParameterNumber.Integer, 0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_VALID_FRACTION, self.label(self.MIN_VALID_FRACTION), QgsProcessingParameterNumber.Double,
            0.5, minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterFile(
            self.COMPRESSOR, self.label(self.COMPRESSOR), extension="onnx", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            self.DIMENSIONS, self.label(self.DIMENSIONS), QgsProcessingParameterNumber.Integer, 1024, minValue=1))
        self.addParameter(QgsProcessingParameterEnum(
            self.S2_OFFSET, self.label(self.S2_OFFSET), options=list(S2_OFFSET_CHOICES), defaultValue="auto",
            usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, self.label(self.DEVICE), options=list(DEVICE_CHOICES), defaultValue="auto",
            usesStaticStrings=True))
        advanced = [
            QgsProcessingParameterFile(self.EMBEDDING_MODEL, self.label(self.EMBEDDING_MODEL),
                                       extension="fusedeo", optional=True),
            QgsProcessingParameterExtent(self.EXTENT, self.label(self.EXTENT), optional=True),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, self.label(self.OUTPUT)))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_TABLE, self.label(self.OUTPUT_TABLE), fileFilter="CSV files (*.csv)", optional=True,
            createByDefault=False))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT_EMBEDDING_MODEL, self.label(self.OUTPUT_EMBEDDING_MODEL),
            fileFilter="FusedEO embedding models (*.fusedeo)", optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterFolderDestination(
            self.OUTPUT_FEATURES, self.label(self.OUTPUT_FEATURES), optional=True, createByDefault=False))

    def checkParameterValues(self, parameters: dict[str, Any],  # noqa: N802 (QGIS API)
                             context: QgsProcessingContext) -> tuple[bool, str]:
        """Reject a run without layers or with an unusable compressor before it starts."""
        given = [name for name, _, _ in LAYER_PARAMETERS if parameters.get(name) not in (None, "")]
        if not given:
            return False, self.tr("No season layer is set: give at least one of {}.").format(
                ", ".join(name for name, _, _ in LAYER_PARAMETERS))
        compressor = self.parameterAsFile(parameters, self.COMPRESSOR, context)
        if compressor:
            from ...errors import PluginError
            from ...models.compressor import OnnxCompressor

            try:
                OnnxCompressor.from_file(compressor)
            except PluginError as err:
                return False, str(err)
        return super().checkParameterValues(parameters, context)

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Read the parameters, run the embedding and return the output paths."""
        from ...models.pipeline import EmbedRequest, run_embedding

        layers = []
        for name, sensor, season in LAYER_PARAMETERS:
            if parameters.get(name) in (None, ""):
                continue
            layer = self.parameterAsRasterLayer(parameters, name, context)
            if layer is None:
                raise QgsProcessingException(self.invalidRasterError(parameters, name))
            layers.append(LayerSpec(name, season, sensor, layer_file_path(layer, name), layer.name()))
        extent, extent_crs = None, None
        if parameters.get(self.EXTENT) not in (None, ""):
            rectangle = self.parameterAsExtent(parameters, self.EXTENT, context)
            extent_crs = self.parameterAsExtentCrs(parameters, self.EXTENT, context).toWkt()
            extent = Bounds(rectangle.xMinimum(), rectangle.yMinimum(), rectangle.xMaximum(), rectangle.yMaximum())
        request = EmbedRequest(
            layers=layers,
            encoders=self.parameterAsEnumStrings(parameters, self.ENCODERS, context),
            output_path=self.parameterAsOutputLayer(parameters, self.OUTPUT, context),
            patch_size_px=self.parameterAsInt(parameters, self.PATCH_SIZE, context),
            stride_px=self.parameterAsInt(parameters, self.STRIDE, context)
            or self.parameterAsInt(parameters, self.PATCH_SIZE, context),
            min_valid_fraction=self.parameterAsDouble(parameters, self.MIN_VALID_FRACTION, context),
            dimensions=self.parameterAsInt(parameters, self.DIMENSIONS, context),
            s2_offset=self.parameterAsEnumString(parameters, self.S2_OFFSET, context),
            device=self.parameterAsEnumString(parameters, self.DEVICE, context),
            compressor_path=self.parameterAsFile(parameters, self.COMPRESSOR, context) or None,
            embedding_model_path=self.parameterAsFile(parameters, self.EMBEDDING_MODEL, context) or None,
            output_table_path=self.parameterAsFileOutput(parameters, self.OUTPUT_TABLE, context) or None,
            output_model_path=self.parameterAsFileOutput(parameters, self.OUTPUT_EMBEDDING_MODEL, context) or None,
            output_features_path=self.parameterAsFileOutput(parameters, self.OUTPUT_FEATURES, context) or None,
            extent=extent,
            extent_crs_wkt=extent_crs,
            weights_dir=str(default_weights_dir()),
        )

        # Cancelling is an outcome, not a failure: the core has removed every partial output.
        try:
            with self.interrupt_cancels(feedback):
                result = self.run_core(run_embedding, request, FeedbackReporter(feedback))
        except RunCancelledError as err:
            feedback.pushInfo(str(err))
            return {}

        outputs: dict[str, Any] = {self.OUTPUT: result.output_path}
        if result.output_table_path:
            outputs[self.OUTPUT_TABLE] = result.output_table_path
        if result.output_model_path:
            outputs[self.OUTPUT_EMBEDDING_MODEL] = result.output_model_path
        if request.output_features_path:
            outputs[self.OUTPUT_FEATURES] = request.output_features_path
        feedback.pushInfo(f"Embedding raster: {result.output_path} ({result.dimensions} bands, "
                          f"{result.patches_valid} of {result.patches_total} patches valid).")
        return outputs
