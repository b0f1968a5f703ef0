"""The encoder contract: model cards, fused blocks and the Encoder base class.

Every encoder reads the canonical season stack of :mod:`fusedeo.raster.bands`
(shape ``(B, T, 27, H, W)``: batch, 4 seasons, 27 channels; S1 in dB, S2 as
digital numbers without the +1000 offset, NaN where missing or invalid) and
returns one fused block per patch. The encoder itself picks its bands, adds
the S2 offset if its weights were trained with it, normalises, fills NaN with
zero after normalisation (the band's mean), resizes and pools.
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...errors import InputError
from ...raster.bands import Sensor
from ...reporting import Reporter


@dataclass(frozen=True)
class WeightsInfo:
    """A published checkpoint: where it comes from and how to check it."""

    file_name: str
    url: str
    sha256: str
    size_bytes: int
    licence: str


@dataclass(frozen=True)
class EncoderCard:
    """Declarative description of an encoder's input contract and output.

    Attributes:
        name: The value used in the ``ENCODERS`` parameter.
        title: Human-readable model name.
        inputs: Sensors and their bands, in the order the model receives them.
        required_sensors: Sensors without which the encoder cannot run.
        s2_offset_expected: Whether the weights were trained on S2 digital
            numbers that carry the +1000 processing-baseline offset.
        input_size_px: Side of the model input in pixels (None: any size).
        resize: How patches are brought to ``input_size_px``.
        season_mode: ``"per_season"`` (one forward per season), ``"time_frames"``
            (seasons as frames of one forward) or ``"mean"`` (features
            averaged over seasons).
        pooling: How tokens or feature maps become one vector.
        width_per_season: Output channels per season (or in total for
            ``"mean"`` and pooled time-frame models).
        weights: The checkpoint, or None for training-free encoders.
    """

    name: str
    title: str
    inputs: tuple[tuple[Sensor, tuple[str, ...]], ...]
    required_sensors: frozenset[Sensor]
    s2_offset_expected: bool
    input_size_px: int | None
    resize: str
    season_mode: str
    pooling: str
    width_per_season: int
    weights: WeightsInfo | None = None


@dataclass(frozen=True)
class FusedBlock:
    """One encoder's block of the fused vector.

    The block is stored channel-major: value ``(c, t)`` sits at index
    ``c * seasons + t``, so the seasons of one feature are adjacent.
    """

    name: str
    channels: int
    seasons: int

    @property
    def width(self) -> int:
        """Number of values of the block in the fused vector."""
        return self.channels * self.seasons

    def to_json(self) -> dict[str, Any]:
        """Return the block as a JSON-serialisable dict."""
        return {"name": self.name, "channels": self.channels, "seasons": self.seasons}


@dataclass
class PatchSampler:
    """Lazy access to the valid (patch, season) pairs of a run, for fitting.

    Attributes:
        count: Number of (patch, season) pairs.
        patch_shape: Patch ``(rows, cols)`` in pixels.
        read_window: ``(pair, row, col, rows, cols)`` → canonical stack of one
            season, float32 ``(27, rows, cols)``; row and col are relative to
            the patch.
        channels_present: Per canonical channel, whether the run provides it.
    """

    count: int
    patch_shape: tuple[int, int]
    read_window: Callable[[int, int, int, int, int], np.ndarray]
    channels_present: Sequence[bool] = field(default_factory=list)


class Encoder(ABC):
    """An encoder that turns canonical season stacks into fused blocks."""

    card: EncoderCard

    @abstractmethod
    def block(self) -> FusedBlock:
        """Return this encoder's block of the fused vector."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """Return the JSON-serialisable settings that define this encoder's output.

        They are the keyword arguments of the constructor: ``create_encoder(name,
        **settings)`` rebuilds the same encoder.
        """

    def fitted_arrays(self) -> dict[str, np.ndarray]:
        """Return the arrays fitted in this run (empty for pretrained encoders)."""
        return {}

    def load_fitted(self, arrays: dict[str, np.ndarray]) -> None:  # noqa: B027 (optional hook)
        """Restore arrays from :meth:`fitted_arrays` of an earlier run."""

    @property
    def needs_fit(self) -> bool:
        """Whether :meth:`fit` must run before :meth:`encode`."""
        return False

    def fit(self, sampler: PatchSampler, reporter: Reporter) -> None:  # noqa: B027
        """Fit run-dependent parts (for example random kernels) on valid patches."""

    def preferred_batch_size(self) -> int:
        """Return the number of patches per :meth:`encode` call on this device."""
        return 8

    def prepare(self, sensors_present: Collection[Sensor], reporter: Reporter) -> None:
        """Check, before any patch is read, that the run provides the sensors this encoder needs.

        Encoders that can read either Sentinel-2 level override this to pick
        one and report the choice.

        Raises:
            InputError: Naming this encoder and the missing sensors.
        """
        missing = sorted(sensor.value for sensor in self.card.required_sensors if sensor not in sensors_present)
        if missing:
            raise InputError(
                f"ENCODERS: {self.card.name} needs {', '.join(missing)} layers, but none were given. "
                f"Add them or remove {self.card.name} from ENCODERS."
            )

    @abstractmethod
    def encode(self, stack: np.ndarray, seasons_present: Sequence[bool]) -> np.ndarray:
        """Encode a batch of patches.

        Args:
            stack: Canonical season stack, float32 ``(B, T, 27, H, W)``.
            seasons_present: For each of the ``T`` seasons, whether any layer
                was given for it.

        Returns:
            Float32 array ``(B, block().width)``, finite.
        """
