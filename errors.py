"""Exception classes of FusedEO.

Every error raised by the QGIS-free core derives from :class:`PluginError` and
from the built-in exception that matches its meaning, so callers may catch
either. Messages name the layer or parameter, the value, what was expected and
what to do; the Processing layer turns them into ``QgsProcessingException``.
"""


class PluginError(Exception):
    """Root of all FusedEO errors."""


class InputError(PluginError, ValueError):
    """A parameter or input layer has an invalid value."""


class BandMismatchError(InputError):
    """The bands of a layer do not match what its sensor or model expects."""


class GridError(InputError):
    """Layers cannot be placed on one target grid (CRS, extent or size)."""


class ArchiveError(InputError):
    """A dataset archive (zarr.zip) is corrupt or not in the expected layout."""


class ModelFileError(PluginError, ValueError):
    """A model file (ONNX compressor, probe or embedding model) is invalid."""


class LayoutMismatchError(ModelFileError):
    """A model was made for a different embedding layout or space."""


class ChecksumMismatchError(ModelFileError):
    """A checkpoint's size or sha256 differs from the one the manifest records."""


class CheckpointKeyError(ModelFileError):
    """A checkpoint's tensor names or shapes do not match the model."""


class MissingFileError(PluginError, FileNotFoundError):
    """A required file does not exist."""


class OutputError(PluginError, OSError):
    """An output file or folder cannot be written."""


class DownloadError(PluginError, OSError):
    """A download failed (network error, HTTP error or server misbehaviour)."""


class LicenceNotAcceptedError(InputError):
    """A checkpoint's licence requires explicit acceptance that was not given."""


class MissingDependencyError(PluginError, ImportError):
    """An optional Python package needed by the requested operation is missing."""


class DeviceError(PluginError, RuntimeError):
    """The requested compute device is not available."""


class RunCancelledError(PluginError):
    """The user cancelled a run; partial outputs have been removed."""


def import_optional(module_name: str, purpose: str):  # noqa: ANN201 (returns a module)
    """Import an optional heavy package, or explain how to install it.

    Args:
        module_name: Importable name, for example ``"onnxruntime"``.
        purpose: What the package is needed for, used in the message.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: If the package cannot be imported.
    """
    import importlib

    pip_names = {"sklearn": "scikit-learn", "osgeo": "GDAL (python3-gdal)"}
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        top = module_name.split(".")[0]
        package = pip_names.get(top, top)
        raise MissingDependencyError(
            f"The Python package '{package}' is needed for {purpose} but could not be "
            f"imported ({err}). Install it into the Python environment that QGIS uses, "
            f"for example with: python3 -m pip install {package}"
        ) from err
