"""CROMA-Large: joint Sentinel-1 + Sentinel-2 L2A encoder (torchgeo ``croma_large``).

CROMA (Fuller et al., NeurIPS 2023, arXiv 2311.00566) encodes 2 SAR channels
and 12 optical channels with two ViTs (patch 8, 2-D ALiBi position bias) and
fuses them with a cross-attention encoder. This encoder returns ``joint_GAP``,
the mean of the joint encoder's tokens after its final LayerNorm, per season.

CROMA's published input contract (antofuller/CROMA README) asks for 2 S1
channels and 12 S2 channels without the cirrus band B10, which is the 12-band
L2A set. Each channel is scaled from ``[mean - 2 std, mean + 2 std]`` to
``[0, 1]`` and clipped. The README computes mean and std per batch. This
encoder uses fixed per-band moments of unshifted Embed2Scale challenge data
instead (S1 in dB, S2 L2A DN without the +1000 offset), so that a patch's
features do not depend on the rest of its batch.

Deviation from the winning Embed2Scale code: that code fed CROMA plain
z-scores (centred on 0, unbounded), not CROMA's ``[0, 1]`` window. Here the
z-score ``z`` becomes ``clip((z + 2) / 4, 0, 1)``, and a missing value (NaN)
becomes the band mean, 0.5. Like that code, the model runs at 264 px
(33 x 33 patches) by default, not at the 120 px it was trained on, because
ALiBi extends to a larger grid without new weights.

Seasons: each present season is encoded on its own, as a separate sample of
one batch. The block of a season given no layers holds the mean of the
present seasons' features (reported by the caller). Checkpoint key filter:
see :func:`checkpoint_key_filter`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, import_optional
from ...raster.bands import S1_BANDS, S2L2A_BANDS, Sensor
from ...reporting import Reporter
from .base import Encoder, EncoderCard, FusedBlock, WeightsInfo
from .inputs import (
    check_stack,
    fill_absent_seasons,
    resize_square,
    sensor_bands,
    sensors_with_data,
    to_block,
    z_score,
)

logger = logging.getLogger(__name__)

WEIGHTS = WeightsInfo(
    file_name="CROMA_large-921e69ad.pt",
    url=(
        "https://huggingface.co/torchgeo/croma/resolve/"
        "92cb1a0f4e34c6c01558baf070197c01255382f6/CROMA_large-921e69ad.pt"
    ),
    # Git LFS pointer of the torchgeo/croma upload (the same bytes as
    # antofuller/CROMA's CROMA_large.pt, renamed).
    sha256="921e69ad4069201298bb5c860dc332f31e0cb01df6864f294a79fa8f921915a7",
    size_bytes=2_690_426_614,
    licence="MIT",
)

CARD = EncoderCard(
    name="croma",
    title="CROMA-Large (torchgeo croma_large, joint_GAP)",
    inputs=((Sensor.S1, S1_BANDS), (Sensor.S2L2A, S2L2A_BANDS)),
    required_sensors=frozenset({Sensor.S1, Sensor.S2L2A}),
    s2_offset_expected=False,
    input_size_px=264,
    resize="bilinear, antialiased (skipped when the patch already has the input size)",
    season_mode="per_season",
    pooling="joint_GAP: mean of the cross-attention encoder's tokens after LayerNorm",
    width_per_season=1024,
    weights=WEIGHTS,
)

# Per-band moments of the Embed2Scale challenge data (no +1000 offset), in
# S1_BANDS and S2L2A_BANDS order. They are the constants of the challenge's
# reference dataset class (DLR-MF-DAS embed2scale-challenge-supplement).
S1_MEAN_DB: tuple[float, ...] = (-11.834, -19.243)
S1_STD_DB: tuple[float, ...] = (4.305, 5.479)
S2L2A_MEAN_DN: tuple[float, ...] = (
    802.067, 917.472, 1130.01, 1210.515, 1587.985, 2355.781,
    2650.339, 2787.571, 2860.466, 2921.651, 2221.172, 1549.952,
)
S2L2A_STD_DN: tuple[float, ...] = (
    1563.348, 1604.422, 1553.908, 1622.652, 1593.07, 1523.264,
    1556.785, 1618.961, 1532.417, 1653.532, 1183.218, 1025.306,
)
WINDOW_STDS = 2.0
"""Half-width of CROMA's scaling window, in standard deviations."""

PATCH_SIZE_PX = 8
NUM_HEADS = 16
JOINT_WIDTH = 1024
CHECKPOINT_PARTS: tuple[str, ...] = ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")
"""Top-level entries of the published checkpoint, each a state dict of one submodule."""


@functools.lru_cache(maxsize=4)
def alibi_bias(num_heads: int, grid_size: int) -> Any:
    """Return CROMA's 2-D ALiBi attention bias for a ``grid_size`` x ``grid_size`` patch grid.

    Equal, value for value, to torchgeo 0.8.1's ``get_2dalibi`` (which loops in
    Python over all patch pairs, about 1.2 million steps at 264 px), but built
    with array operations and cached per process. The bias of head ``h``
    between patches ``p`` and ``q`` is ``-slope_h * euclidean_distance(p, q)``
    with the geometric ALiBi slopes ``slope_h = start ** (h + 1)``.

    Returns:
        float32 tensor ``(1, num_heads, grid_size**2, grid_size**2)``; treat it
        as read-only because it is shared.
    """
    torch = import_optional("torch", "the CROMA encoder")
    start = 2 ** (-(2 ** -(np.log2(num_heads) - 3)))
    slopes = torch.tensor([start * start**i for i in range(num_heads)], dtype=torch.float32)
    rows, cols = np.divmod(np.arange(grid_size * grid_size), grid_size)
    # Distances in float64 and cast once, as torchgeo computes them with math.sqrt.
    distance = np.sqrt(
        (rows[:, None] - rows[None, :]).astype(np.float64) ** 2
        + (cols[:, None] - cols[None, :]).astype(np.float64) ** 2
    )
    distance_t = torch.from_numpy(distance.astype(np.float32))
    bias = distance_t[None, :, :] * slopes[:, None, None] * -1
    return bias.unsqueeze(0).contiguous()


def build_model(input_size_px: int, meta: bool = False) -> Any:
    """Build torchgeo's ``croma_large`` (no weights) with the ALiBi bias for ``input_size_px``.

    The builder is called with ``image_size=8`` so that it skips its slow bias
    loop. The bias buffer is then replaced by :func:`alibi_bias` for the real
    grid, or on a ``meta`` model by a placeholder that the checkpoint loader fills.

    Args:
        input_size_px: Side of the model input, a multiple of 8.
        meta: Build without allocating weights (they come from a checkpoint).
    """
    torch = import_optional("torch", "the CROMA encoder")
    croma = import_optional("torchgeo.models.croma", "the CROMA encoder")
    grid_size = input_size_px // PATCH_SIZE_PX
    if meta:
        with torch.device("meta"):
            model = croma.croma_large(weights=None, modalities=["sar", "optical"], image_size=PATCH_SIZE_PX)
            model.attn_bias = torch.empty(1, NUM_HEADS, grid_size**2, grid_size**2)
    else:
        model = croma.croma_large(weights=None, modalities=["sar", "optical"], image_size=PATCH_SIZE_PX)
        model.attn_bias = alibi_bias(NUM_HEADS, grid_size)
    model.image_size = input_size_px
    model.num_patches = (input_size_px // PATCH_SIZE_PX) ** 2
    return model


def checkpoint_key_filter(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten the published CROMA checkpoint into ``croma_large``'s state-dict keys.

    The published file (antofuller/CROMA, re-hosted by torchgeo) is a dict of
    five state dicts, one per submodule (:data:`CHECKPOINT_PARTS`). Entry
    ``"s2_encoder"``'s key ``"linear_input.weight"`` becomes
    ``"s2_encoder.linear_input.weight"``. Any other top-level entry is kept
    under its own name, so that strict loading reports it as unexpected. The
    ALiBi bias ``attn_bias`` is computed, never loaded.
    """
    flat: dict[str, Any] = {}
    for part, value in checkpoint.items():
        if part in CHECKPOINT_PARTS and isinstance(value, Mapping):
            for key, tensor in value.items():
                flat[f"{part}.{key}"] = tensor
        else:
            flat[str(part)] = value
    return flat


def official_checkpoint_state(model: Any) -> dict[str, dict[str, Any]]:
    """Return ``model``'s weights in the published checkpoint's layout (inverse of the filter)."""
    nested: dict[str, dict[str, Any]] = {part: {} for part in CHECKPOINT_PARTS}
    for key, tensor in model.state_dict().items():
        part, _, rest = key.partition(".")
        if part in nested:
            nested[part][rest] = tensor
    return nested


class CromaEncoder(Encoder):
    """CROMA-Large joint S1 + S2 L2A features, each season encoded on its own.

    Args:
        device: torch device string.
        checkpoint: The verified checkpoint file (``WeightStore.resolve``).
        random_weights: Run on seeded random weights instead of a checkpoint;
            for tests and benchmarks only.
        seed: Seed of the random weights.
        input_size_px: Side the patches are resized to (multiple of 8).
        weights_sha256: Expected sha256 from an earlier run's settings; must
            equal the card's.

    Raises:
        InputError: If no checkpoint is given without ``random_weights``, or a
            setting is invalid.
    """

    card = CARD

    def __init__(
        self,
        device: str = "cpu",
        checkpoint: Path | str | None = None,
        random_weights: bool = False,
        seed: int = 0,
        input_size_px: int = 264,
        weights_sha256: str | None = None,
    ) -> None:
        """Build the model and load the checkpoint strictly."""
        if input_size_px <= 0 or input_size_px % PATCH_SIZE_PX:
            raise InputError(
                f"croma: input_size_px={input_size_px} is invalid; expected a positive multiple "
                f"of {PATCH_SIZE_PX} (CROMA's patch size)."
            )
        if weights_sha256 is not None and weights_sha256 != WEIGHTS.sha256:
            raise InputError(
                f"croma: these settings were made with weights sha256 {weights_sha256}, but this "
                f"version of FusedEO uses {WEIGHTS.file_name} (sha256 {WEIGHTS.sha256})."
            )
        if checkpoint is None and not random_weights:
            raise InputError(
                f"croma: no checkpoint given. FusedEO never runs CROMA on unverified weights: "
                f"get {WEIGHTS.file_name} with fusedeo:downloadweights and pass its verified path."
            )
        torch = import_optional("torch", "the CROMA encoder")
        self.device = device
        self.input_size_px = input_size_px
        self.random_weights = checkpoint is None
        self.seed = seed
        self._sensors: set[Sensor] | None = None
        if checkpoint is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build_model(input_size_px)
        else:
            from ..weights import load_checkpoint_strict

            model = build_model(input_size_px, meta=True)
            load_checkpoint_strict(
                model,
                checkpoint,
                checkpoint_key_filter,
                own_state={"attn_bias": alibi_bias(NUM_HEADS, input_size_px // PATCH_SIZE_PX)},
            )
        self.model = model.to(device).eval()

    def block(self) -> FusedBlock:
        """Return the CROMA block: 1024 channels x 4 seasons."""
        return FusedBlock(name=CARD.name, channels=CARD.width_per_season, seasons=4)

    def settings(self) -> dict[str, Any]:
        """Return the settings that define this encoder's output."""
        settings: dict[str, Any] = {"input_size_px": self.input_size_px}
        if self.random_weights:
            settings.update(random_weights=True, seed=self.seed)
        else:
            settings["weights_sha256"] = WEIGHTS.sha256
        return settings

    def preferred_batch_size(self) -> int:
        """Return 1 on CPU (a 264 px forward is already large) and 8 on CUDA."""
        return 8 if self.device.startswith("cuda") else 1

    def prepare(self, sensors_present: Collection[Sensor], reporter: Reporter) -> None:
        """Check that the run has the sensors CROMA needs and report its input.

        Raises:
            InputError: If Sentinel-1 or Sentinel-2 L2A is missing.
        """
        self._check_sensors(set(sensors_present))
        self._sensors = set(sensors_present)
        reporter.info(
            f"croma: S1 {', '.join(S1_BANDS)} and S2 L2A {', '.join(S2L2A_BANDS)} (DN without the "
            f"+1000 offset), scaled from mean ± {WINDOW_STDS:g} std to [0, 1], resized to "
            f"{self.input_size_px} px, each season encoded on its own."
        )

    def _check_sensors(self, sensors: set[Sensor]) -> None:
        missing = sorted(sensor.value for sensor in CARD.required_sensors - sensors)
        if missing:
            raise InputError(
                f"croma: the encoder needs Sentinel-1 (VV, VH) and Sentinel-2 L2A layers, but "
                f"no {' or '.join(missing)} input was given. Add those layers or remove croma "
                "from ENCODERS."
            )

    def model_inputs(self, season_stack: np.ndarray) -> dict[str, Any]:
        """Return the tensors CROMA receives for a batch of single-season patches.

        Args:
            season_stack: Canonical channels, ``(N, 27, H, W)``.

        Returns:
            ``{"x_sar": (N, 2, S, S), "x_optical": (N, 12, S, S)}`` float32
            tensors on the encoder's device, ``S = input_size_px``.
        """
        inputs = {}
        for name, sensor, bands, mean, std in (
            ("x_sar", Sensor.S1, S1_BANDS, S1_MEAN_DB, S1_STD_DB),
            ("x_optical", Sensor.S2L2A, S2L2A_BANDS, S2L2A_MEAN_DN, S2L2A_STD_DN),
        ):
            z = z_score(sensor_bands(season_stack, sensor, bands), mean, std)
            scaled = np.clip((z + WINDOW_STDS) / (2 * WINDOW_STDS), 0.0, 1.0)
            inputs[name] = resize_square(scaled, self.input_size_px, self.device)
        return inputs

    def encode(self, stack: np.ndarray, seasons_present: Sequence[bool]) -> np.ndarray:
        """Encode a batch: ``(B, T, 27, H, W)`` -> ``(B, 1024 * T)``, channel-major.

        The present seasons of all patches go through one forward.

        Raises:
            InputError: If the stack is malformed, no season is present, or
                Sentinel-1 or Sentinel-2 L2A has no data.
        """
        torch = import_optional("torch", "the CROMA encoder")
        present = check_stack(stack, seasons_present, CARD.name)
        if self._sensors is None:
            # Without prepare(), the sensors are judged once, from the first batch.
            self._sensors = sensors_with_data(stack, seasons_present)
            logger.info("croma: sensors with data in the first batch: %s", sorted(s.value for s in self._sensors))
        self._check_sensors(self._sensors)
        batch, seasons = stack.shape[:2]
        season_patches = stack[:, present].reshape(batch * len(present), *stack.shape[2:])
        with torch.inference_mode():
            joint = self.model(**self.model_inputs(season_patches))["joint_GAP"]
        features = np.zeros((batch, seasons, JOINT_WIDTH), dtype=np.float32)
        features[:, present] = joint.float().cpu().numpy().reshape(batch, len(present), JOINT_WIDTH)
        return to_block(fill_absent_seasons(features, present), CARD.name)
