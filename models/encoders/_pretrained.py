"""Shared machinery of the pretrained (checkpoint-backed) encoders.

Scale-MAE, Copernicus-FM and Prithvi share strict checkpoint loading and the
choice between the Sentinel-2 L1C and L2A slots of the canonical stack. They
also share the checks for missing sensors, the fill of absent seasons and the
resize to the model's input size. torch is imported inside the functions that
need it, so this module imports without torch.
"""

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, MissingFileError, ModelFileError
from ...raster.bands import Sensor, sensor_channel_slice
from ...reporting import LoggingReporter, Reporter
from .base import Encoder, EncoderCard, FusedBlock

S2_LEVEL_CHOICES: tuple[str, ...] = ("auto", "l1c", "l2a")
"""Values of the ``s2_level`` setting: which Sentinel-2 product an encoder reads."""

_LEVEL_SENSORS: dict[str, Sensor] = {"l1c": Sensor.S2L1C, "l2a": Sensor.S2L2A}
_SENSOR_TITLES: dict[Sensor, str] = {
    Sensor.S1: "Sentinel-1 (VV, VH)",
    Sensor.S2L1C: "Sentinel-2 L1C",
    Sensor.S2L2A: "Sentinel-2 L2A",
}
_KEYS_SHOWN = 10


def _format_keys(keys: Sequence[str]) -> str:
    """Return the first keys of ``keys`` and their count, for an error message."""
    shown = ", ".join(keys[:_KEYS_SHOWN])
    more = f", … ({len(keys) - _KEYS_SHOWN} more)" if len(keys) > _KEYS_SHOWN else ""
    return f"{len(keys)}: {shown}{more}"


def read_checkpoint(path: Path, title: str) -> dict[str, Any]:
    """Read a checkpoint file with ``torch.load(weights_only=True)``.

    A top-level ``{"model": state_dict}`` wrapper, as written by many MAE
    training scripts, is unwrapped.

    Args:
        path: The checkpoint file.
        title: Model name for messages.

    Returns:
        The state dict as stored in the file (keys not yet filtered).

    Raises:
        MissingFileError: If ``path`` does not exist.
        ModelFileError: If the file cannot be read as a tensor-only state dict.
    """
    import torch

    if not path.is_file():
        raise MissingFileError(
            f"{title}: checkpoint file {path} not found; download or import it with "
            "fusedeo:downloadweights."
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for bad files
        raise ModelFileError(
            f"{title}: checkpoint {path} could not be read as a tensor-only state dict "
            f"({type(err).__name__}: {err}). Use the published file named in the model "
            "card; files that pickle Python objects are rejected."
        ) from err
    if isinstance(content, Mapping) and "model" in content and isinstance(content["model"], Mapping):
        content = content["model"]
    if not isinstance(content, Mapping):
        raise ModelFileError(
            f"{title}: checkpoint {path} contains a {type(content).__name__}, "
            "expected a state dict (a mapping of parameter names to tensors)."
        )
    return dict(content)


def load_checkpoint_strict(
    model: Any,
    path: Path,
    key_filter: Callable[[dict[str, Any]], dict[str, Any]],
    title: str,
) -> None:
    """Load ``path`` into ``model`` after ``key_filter``, with strict key matching.

    Args:
        model: The ``torch.nn.Module`` to fill.
        path: The checkpoint file.
        key_filter: Maps the stored state dict to the model's key layout; it
            renames and drops only the keys its encoder documents.
        title: Model name for messages.

    Raises:
        MissingFileError: If ``path`` does not exist.
        ModelFileError: If a key is missing or unexpected after the filter, or
            a tensor has the wrong shape.
    """
    state_dict = key_filter(read_checkpoint(path, title))
    expected = set(model.state_dict().keys())
    missing = sorted(expected - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_format_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_format_keys(unexpected)}")
        raise ModelFileError(
            f"{title}: checkpoint {path} does not match the model after the key filter: "
            f"{'; '.join(parts)}. The file is not the published checkpoint for this "
            "encoder; fetch it again with fusedeo:downloadweights."
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise ModelFileError(
            f"{title}: checkpoint {path} has the expected keys but tensors of the wrong "
            f"shape ({err}). It belongs to another model size or variant."
        ) from err


def resize_bilinear(x: Any, size_px: int) -> Any:
    """Resize ``(B, C, H, W)`` to ``(B, C, size_px, size_px)``, bilinear with antialiasing."""
    import torch.nn.functional as F

    if x.shape[-2:] == (size_px, size_px):
        return x
    return F.interpolate(x, size=(size_px, size_px), mode="bilinear", antialias=True, align_corners=False)


def zscore(values: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """Return ``(values - mean) / std`` per channel of ``(B, C, H, W)``, with NaN set to 0.

    Zero after normalisation is the band's mean, which is how missing bands
    and invalid pixels enter every model.
    """
    import torch

    mean_t = torch.tensor(mean, dtype=values.dtype, device=values.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=values.dtype, device=values.device).view(1, -1, 1, 1)
    return torch.nan_to_num((values - mean_t) / std_t, nan=0.0)


class PretrainedEncoder(Encoder):
    """Base of the encoders that run a pretrained torch model per patch.

    Subclasses set ``card``, ``preferred_s2_level``, ``required_s1`` and
    ``title``, and implement :meth:`_build_model`, :meth:`_key_filter` and
    :meth:`_encode_seasons`.
    """

    card: EncoderCard
    title: str
    preferred_s2_level: str
    required_s1: bool = False

    def __init__(
        self,
        device: str = "cpu",
        checkpoint: Path | str | None = None,
        *,
        random_weights: bool = False,
        s2_level: str = "auto",
        reporter: Reporter | None = None,
    ) -> None:
        """Build the model and load its checkpoint strictly.

        Args:
            device: torch device string (``"cpu"`` or ``"cuda"``).
            checkpoint: The published checkpoint (see the model card). None is
                only allowed together with ``random_weights=True``.
            random_weights: Whether to run on random weights instead of a
                checkpoint. For tests only: the output then carries no
                pretrained knowledge, and ``settings()`` records it.
            s2_level: ``"auto"`` (use the model's preferred Sentinel-2 level
                and fall back to the other one when it is absent), ``"l1c"``
                or ``"l2a"``.
            reporter: Receives the decisions that change results.

        Raises:
            ModelFileError: If ``checkpoint`` is None without ``random_weights``,
                or the checkpoint does not match the model.
            MissingFileError: If ``checkpoint`` does not exist.
            InputError: If ``s2_level`` is not a known choice.
        """
        if s2_level not in S2_LEVEL_CHOICES:
            raise InputError(
                f"{self.title}: s2_level '{s2_level}' is not valid; expected one of "
                f"{', '.join(S2_LEVEL_CHOICES)}."
            )
        self.device = device
        self.random_weights = random_weights
        self.reporter: Reporter = reporter if reporter is not None else LoggingReporter(__name__)
        self._s2_level_setting = s2_level
        self._s2_level: str | None = None if s2_level == "auto" else s2_level
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None

        if self.checkpoint is None and not random_weights:
            weights = self.card.weights
            where = f" ({weights.file_name}, {weights.url})" if weights is not None else ""
            raise ModelFileError(
                f"{self.title}: no checkpoint given{where}. FusedEO never runs this encoder "
                "on unverified weights; get the file with fusedeo:downloadweights "
                "(random_weights=True exists for tests only)."
            )

        if self.checkpoint is not None and not self.checkpoint.is_file():
            # Checked before the model is built, which takes seconds for a ViT-L.
            raise MissingFileError(
                f"{self.title}: checkpoint file {self.checkpoint} not found; download or "
                "import it with fusedeo:downloadweights."
            )

        import torch

        self._torch = torch
        self.model = self._build_model()
        if self.checkpoint is not None:
            load_checkpoint_strict(self.model, self.checkpoint, self._key_filter, self.title)
            self.reporter.info(f"{self.title}: weights loaded strictly from {self.checkpoint.name}.")
        else:
            self.reporter.warning(
                f"{self.title}: running on RANDOM weights (random_weights=True); the "
                "features carry no pretrained knowledge."
            )
        self.model.eval().to(device)

    # Subclass hooks -------------------------------------------------------

    def _build_model(self) -> Any:
        """Return the model as a ``torch.nn.Module`` with fresh weights."""
        raise NotImplementedError

    def _key_filter(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """Map the official checkpoint's keys to the model's keys."""
        raise NotImplementedError

    def _encode_seasons(
        self, stack: np.ndarray, seasons: Sequence[int], s2_sensor: Sensor
    ) -> np.ndarray:
        """Return features ``(B, len(seasons), C)`` for the given season indices."""
        raise NotImplementedError

    # Contract ---------------------------------------------------------------

    def block(self) -> FusedBlock:
        """Return this encoder's block: ``width_per_season`` channels × 4 seasons."""
        return FusedBlock(name=self.card.name, channels=self.card.width_per_season, seasons=4)

    def settings(self) -> dict[str, Any]:
        """Return the settings that define the output (resolved S2 level, random weights)."""
        level = self._s2_level if self._s2_level is not None else self._s2_level_setting
        return {"s2_level": level, "random_weights": self.random_weights}

    def prepare(self, sensors_present: Collection[Sensor], reporter: Reporter) -> None:
        """Check the sensors of the run and decide the Sentinel-2 level before any patch is read.

        Raises:
            InputError: If Sentinel-1 (when needed) or any Sentinel-2 level is missing.
        """
        self.reporter = reporter
        present = set(sensors_present)
        if self.required_s1 and Sensor.S1 not in present:
            raise InputError(
                f"{self.title} needs {_SENSOR_TITLES[Sensor.S1]}, but no S1 layer was given; add S1 "
                f"layers or remove '{self.card.name}' from ENCODERS."
            )
        if self._s2_level is not None:
            wanted = _LEVEL_SENSORS[self._s2_level]
            if wanted not in present:
                raise InputError(
                    f"{self.title} is set to read {_SENSOR_TITLES[wanted]}, but no such layer was given; "
                    f"add those layers or remove '{self.card.name}' from ENCODERS."
                )
            return
        preferred = self.preferred_s2_level
        other = "l2a" if preferred == "l1c" else "l1c"
        if _LEVEL_SENSORS[preferred] in present:
            self._s2_level = preferred
            reporter.info(f"{self.title}: reads Sentinel-2 {preferred.upper()}.")
        elif _LEVEL_SENSORS[other] in present:
            self._s2_level = other
            reporter.warning(
                f"{self.title}: Sentinel-2 {preferred.upper()} is absent, so it reads {other.upper()} "
                f"instead; its bands and normalisation constants follow {other.upper()}."
            )
        else:
            raise InputError(
                f"{self.title} needs Sentinel-2 (L1C or L2A), but no S2 layer was given; add those "
                f"layers or remove '{self.card.name}' from ENCODERS."
            )

    def preferred_batch_size(self) -> int:
        """Return a batch size that keeps a large ViT within memory on this device."""
        return 16 if self.device.startswith("cuda") else 2

    def encode(self, stack: np.ndarray, seasons_present: Sequence[bool]) -> np.ndarray:
        """Encode a batch of canonical season stacks.

        Seasons that are not present get the mean of the present seasons'
        features, so the block keeps its fixed layout.

        Args:
            stack: Canonical season stack, float32 ``(B, T, 27, H, W)``.
            seasons_present: For each of the ``T`` seasons, whether any layer
                was given for it.

        Returns:
            Float32 ``(B, block().width)``, channel-major (index ``c * T + t``).

        Raises:
            InputError: If the stack has the wrong shape, no season is present,
                or a sensor this encoder needs is absent.
        """
        present = self._check_stack(stack, seasons_present)
        s2_sensor = self._resolve_s2_sensor(stack, present)
        if self.required_s1:
            self._require_sensor(stack, present, Sensor.S1)

        features = self._encode_seasons(stack, present, s2_sensor)
        batch, _, channels = features.shape
        seasons = stack.shape[1]
        full = np.empty((batch, seasons, channels), dtype=np.float32)
        full[:, present] = features
        absent = [t for t in range(seasons) if t not in present]
        if absent:
            full[:, absent] = features.mean(axis=1, keepdims=True)
        output = np.ascontiguousarray(full.transpose(0, 2, 1)).reshape(batch, channels * seasons)
        if not np.isfinite(output).all():
            raise ModelFileError(
                f"{self.title}: the model returned non-finite features; the checkpoint "
                "may be corrupt. Fetch it again with fusedeo:downloadweights."
            )
        return output

    # Helpers ----------------------------------------------------------------

    def _check_stack(self, stack: np.ndarray, seasons_present: Sequence[bool]) -> list[int]:
        """Check the stack's shape and return the indices of the present seasons."""
        if stack.ndim != 5 or stack.shape[2] != 27:
            raise InputError(
                f"{self.title}: the season stack has shape {stack.shape}; expected "
                "(batch, seasons, 27, rows, cols)."
            )
        if len(seasons_present) != stack.shape[1]:
            raise InputError(
                f"{self.title}: {len(seasons_present)} season flags for a stack of "
                f"{stack.shape[1]} seasons; give one flag per season."
            )
        present = [t for t, flag in enumerate(seasons_present) if flag]
        if not present:
            raise InputError(f"{self.title}: no season is present; give layers for at least one season.")
        return present

    @staticmethod
    def _has_values(stack: np.ndarray, present: Sequence[int], sensor: Sensor) -> bool:
        """Return whether ``sensor``'s channels hold any finite value in the present seasons."""
        return bool(np.isfinite(stack[:, present, sensor_channel_slice(sensor)]).any())

    def _require_sensor(self, stack: np.ndarray, present: Sequence[int], sensor: Sensor) -> None:
        """Raise an InputError naming this encoder and ``sensor`` if the sensor is absent."""
        if not self._has_values(stack, present, sensor):
            raise InputError(
                f"{self.title} needs {_SENSOR_TITLES[sensor]}, but the input has no "
                f"{_SENSOR_TITLES[sensor]} values; add those layers or remove "
                f"'{self.card.name}' from ENCODERS."
            )

    def _resolve_s2_sensor(self, stack: np.ndarray, present: Sequence[int]) -> Sensor:
        """Return the Sentinel-2 slot to read, deciding it once for ``s2_level='auto'``."""
        if self._s2_level is not None:
            sensor = _LEVEL_SENSORS[self._s2_level]
            self._require_sensor(stack, present, sensor)
            return sensor

        preferred = self.preferred_s2_level
        other = "l2a" if preferred == "l1c" else "l1c"
        if self._has_values(stack, present, _LEVEL_SENSORS[preferred]):
            self._s2_level = preferred
            self.reporter.info(f"{self.title}: reads Sentinel-2 {preferred.upper()}.")
        elif self._has_values(stack, present, _LEVEL_SENSORS[other]):
            self._s2_level = other
            self.reporter.warning(
                f"{self.title}: Sentinel-2 {preferred.upper()} is absent, so it reads "
                f"{other.upper()} instead; its bands and normalisation constants follow "
                f"{other.upper()}."
            )
        else:
            raise InputError(
                f"{self.title} needs Sentinel-2 (L1C or L2A), but the input has no "
                f"Sentinel-2 values; add those layers or remove '{self.card.name}' from ENCODERS."
            )
        return _LEVEL_SENSORS[self._s2_level]
