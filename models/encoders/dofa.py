"""DOFA-Base: wavelength-conditioned ViT-B/16 (torchgeo ``dofa_base_patch16_224``).

DOFA (Xiong et al., arXiv 2403.15356) generates its patch-embedding kernels
from each band's centre wavelength, so one model takes any set of bands.
Sentinel-1 and Sentinel-2 go through separate forwards, and the season's
feature is ``[S1 ‖ S2]`` (768 + 768 values), each the model's ``fc_norm`` of
the mean patch token (class token excluded).

DOFA's published input contract (zhu-xlab/DOFA README) is a z-score per band
with the sensor's mean and std, and a 224 x 224 px input, because the fixed
position embedding is not interpolated. Wavelengths are in micrometres.
Sentinel-1 VV and VH both get 5.405, the C-band frequency in GHz, which DOFA
uses as its SAR "wavelength". The Sentinel-2 moments are those of SSL4EO-S12
v1.1, which stores DN with the +1000 processing-baseline offset, so the offset
is added before normalising.

Sentinel-2 is L1C (13 bands) when L1C layers are given, else L2A (12 bands,
no B10) with the L2A moments; the choice is reported and kept in the settings.
This follows the winning Embed2Scale code, except that it used L1C only.

Patches are resized to 224 px (bilinear, antialiased) rather than centre
cropped, so the whole patch is encoded. Seasons: each present season is
encoded on its own; the block of a season given no layers holds the mean of
the present seasons' features. Checkpoint key filter: see
:func:`checkpoint_key_filter`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, import_optional
from ...raster.bands import S1_BANDS, S2_WAVELENGTH_NM, S2L1C_BANDS, S2L2A_BANDS, Sensor
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
    file_name="dofa_base_patch16_224-a0275954.pth",
    url=(
        "https://huggingface.co/torchgeo/dofa/resolve/"
        "b8db318b64a90b9e085ec04ba8851233c5893666/dofa_base_patch16_224-a0275954.pth"
    ),
    # Git LFS pointer of the torchgeo/dofa upload at that revision.
    sha256="a027595480a4b0641d0be330d876034439bcb6ead8b9ce10f4949227426856c6",
    size_bytes=445_295_690,
    licence="CC-BY-4.0",
)

CARD = EncoderCard(
    name="dofa",
    title="DOFA-Base (torchgeo dofa_base_patch16_224)",
    inputs=((Sensor.S1, S1_BANDS), (Sensor.S2L1C, S2L1C_BANDS)),
    # Sentinel-2 is also required, as L1C or L2A, which a set of sensors
    # cannot express; prepare() and encode() check it.
    required_sensors=frozenset({Sensor.S1}),
    s2_offset_expected=True,
    input_size_px=224,
    resize="bilinear, antialiased (skipped when the patch already has the input size)",
    season_mode="per_season",
    pooling="fc_norm of the mean patch token, S1 and S2 forwards concatenated",
    width_per_season=1536,
    weights=WEIGHTS,
)

S2_OFFSET_DN = 1000.0
S1_WAVELENGTH_UM = 5.405
EMBED_WIDTH = 768

# SSL4EO-S12 v1.1 moments (S2 with the +1000 offset), in S1_BANDS, S2L1C_BANDS
# and S2L2A_BANDS order; the constants of the Embed2Scale challenge's reference
# dataset class (DLR-MF-DAS embed2scale-challenge-supplement).
S1_MEAN_DB: tuple[float, ...] = (-12.577, -20.265)
S1_STD_DB: tuple[float, ...] = (5.179, 5.872)
S2L1C_MEAN_DN: tuple[float, ...] = (
    2607.345, 2393.068, 2320.225, 2373.963, 2562.536, 3110.071, 3392.832,
    3321.154, 3583.77, 1838.712, 1021.753, 3205.112, 2545.798,
)
S2L1C_STD_DN: tuple[float, ...] = (
    786.523, 849.702, 875.318, 1143.578, 1126.248, 1161.98, 1273.505,
    1246.79, 1342.755, 576.795, 45.626, 1340.347, 1145.036,
)
S2L2A_MEAN_DN: tuple[float, ...] = (
    1793.243, 1924.863, 2184.553, 2340.936, 2671.402, 3240.082,
    3468.412, 3563.244, 3627.704, 3711.071, 3416.714, 2849.625,
)
S2L2A_STD_DN: tuple[float, ...] = (
    1160.144, 1201.092, 1219.943, 1397.225, 1400.035, 1373.136,
    1429.17, 1485.025, 1447.836, 1652.703, 1471.002, 1365.307,
)

S2_PRODUCTS: dict[str, tuple[Sensor, tuple[str, ...], tuple[float, ...], tuple[float, ...]]] = {
    "s2l1c": (Sensor.S2L1C, S2L1C_BANDS, S2L1C_MEAN_DN, S2L1C_STD_DN),
    "s2l2a": (Sensor.S2L2A, S2L2A_BANDS, S2L2A_MEAN_DN, S2L2A_STD_DN),
}
S2_PRODUCT_CHOICES: tuple[str, ...] = ("auto", "s2l1c", "s2l2a")

# Model keys that the published checkpoint does not contain: torchgeo creates
# fc_norm for global pooling and leaves it at its identity initialisation.
OWN_KEYS: tuple[str, ...] = ("fc_norm.weight", "fc_norm.bias")


def s2_wavelengths_um(bands: Sequence[str]) -> list[float]:
    """Return the centre wavelengths of Sentinel-2 ``bands`` in micrometres."""
    return [S2_WAVELENGTH_NM[band] / 1000.0 for band in bands]


def build_model(meta: bool = False) -> Any:
    """Build torchgeo's ``dofa_base_patch16_224`` without weights and without a head.

    Args:
        meta: Build without allocating weights (they come from a checkpoint).
    """
    torch = import_optional("torch", "the DOFA encoder")
    dofa = import_optional("torchgeo.models.dofa", "the DOFA encoder")
    if meta:
        with torch.device("meta"):
            return dofa.dofa_base_patch16_224(weights=None, num_classes=0)
    return dofa.dofa_base_patch16_224(weights=None, num_classes=0)


def own_state() -> dict[str, Any]:
    """Return the identity ``fc_norm`` that torchgeo uses with the published weights."""
    torch = import_optional("torch", "the DOFA encoder")
    return {"fc_norm.weight": torch.ones(EMBED_WIDTH), "fc_norm.bias": torch.zeros(EMBED_WIDTH)}


def checkpoint_key_filter(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Return the published DOFA checkpoint as ``dofa_base_patch16_224``'s state dict.

    torchgeo's re-host is already a flat state dict in the model's key layout
    (``patch_embed.*``, ``blocks.*``, ``cls_token``, ``pos_embed``), without
    ``fc_norm`` (see :data:`OWN_KEYS`) and without a head, so the filter keeps
    every entry unchanged and strict loading rejects anything else.
    """
    return {str(key): value for key, value in checkpoint.items()}


def official_checkpoint_state(model: Any) -> dict[str, Any]:
    """Return ``model``'s weights in the published checkpoint's layout (no ``fc_norm``)."""
    return {key: tensor for key, tensor in model.state_dict().items() if key not in OWN_KEYS}


class DofaEncoder(Encoder):
    """DOFA-Base features of Sentinel-1 and Sentinel-2, one 1536-value vector per season.

    Args:
        device: torch device string.
        checkpoint: The verified checkpoint file (``WeightStore.resolve``).
        random_weights: Run on seeded random weights instead of a checkpoint;
            for tests and benchmarks only.
        seed: Seed of the random weights.
        s2_product: ``"auto"`` (L1C when given, else L2A), ``"s2l1c"`` or ``"s2l2a"``.
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
        s2_product: str = "auto",
        weights_sha256: str | None = None,
    ) -> None:
        """Build the model and load the checkpoint strictly."""
        if s2_product not in S2_PRODUCT_CHOICES:
            raise InputError(
                f"dofa: s2_product='{s2_product}' is invalid; expected one of "
                f"{', '.join(S2_PRODUCT_CHOICES)}."
            )
        if weights_sha256 is not None and weights_sha256 != WEIGHTS.sha256:
            raise InputError(
                f"dofa: these settings were made with weights sha256 {weights_sha256}, but this "
                f"version of FusedEO uses {WEIGHTS.file_name} (sha256 {WEIGHTS.sha256})."
            )
        if checkpoint is None and not random_weights:
            raise InputError(
                f"dofa: no checkpoint given. FusedEO never runs DOFA on unverified weights: "
                f"get {WEIGHTS.file_name} with fusedeo:downloadweights and pass its verified path."
            )
        torch = import_optional("torch", "the DOFA encoder")
        self.device = device
        self.random_weights = checkpoint is None
        self.seed = seed
        self.s2_product = s2_product
        self._sensors: set[Sensor] | None = None
        if checkpoint is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build_model()
        else:
            from ..weights import load_checkpoint_strict

            model = build_model(meta=True)
            load_checkpoint_strict(model, checkpoint, checkpoint_key_filter, own_state=own_state())
        self.model = model.to(device).eval()

    def block(self) -> FusedBlock:
        """Return the DOFA block: 1536 channels (S1 then S2) x 4 seasons."""
        return FusedBlock(name=CARD.name, channels=CARD.width_per_season, seasons=4)

    def settings(self) -> dict[str, Any]:
        """Return the settings that define this encoder's output."""
        settings: dict[str, Any] = {"s2_product": self.s2_product}
        if self.random_weights:
            settings.update(random_weights=True, seed=self.seed)
        else:
            settings["weights_sha256"] = WEIGHTS.sha256
        return settings

    def preferred_batch_size(self) -> int:
        """Return 4 on CPU and 32 on CUDA (each patch is up to 8 forwards)."""
        return 32 if self.device.startswith("cuda") else 4

    def prepare(self, sensors_present: Collection[Sensor], reporter: Reporter) -> None:
        """Check the run's sensors, choose the Sentinel-2 product and report the input.

        Raises:
            InputError: If Sentinel-1 or the requested Sentinel-2 product is missing.
        """
        self._resolve_sensors(set(sensors_present))
        sensor, bands, _, _ = S2_PRODUCTS[self.s2_product]
        message = (
            f"dofa: S1 {', '.join(S1_BANDS)} (wavelength {S1_WAVELENGTH_UM} µm) and S2 "
            f"{sensor.value} {', '.join(bands)} (+{S2_OFFSET_DN:g} DN offset, SSL4EO-S12 v1.1 "
            f"moments) in separate forwards at {CARD.input_size_px} px."
        )
        if sensor is Sensor.S2L2A:
            reporter.warning(message + " No L1C layer was given, so DOFA uses the L2A bands.")
        else:
            reporter.info(message)

    def _resolve_sensors(self, sensors: set[Sensor]) -> None:
        """Fix ``s2_product`` for ``sensors`` and check that the needed ones are there."""
        if self.s2_product == "auto":
            if Sensor.S2L1C in sensors:
                self.s2_product = "s2l1c"
            elif Sensor.S2L2A in sensors:
                self.s2_product = "s2l2a"
        s2_sensor = S2_PRODUCTS[self.s2_product][0] if self.s2_product != "auto" else None
        missing = []
        if Sensor.S1 not in sensors:
            missing.append("Sentinel-1 (VV, VH)")
        if s2_sensor is None:
            missing.append("Sentinel-2 (L1C or L2A)")
        elif s2_sensor not in sensors:
            missing.append(f"Sentinel-2 {s2_sensor.value} (the s2_product setting)")
        if missing:
            raise InputError(
                f"dofa: the encoder needs Sentinel-1 and Sentinel-2 layers, but no "
                f"{' or '.join(missing)} input was given. Add those layers or remove dofa "
                "from ENCODERS."
            )
        self._sensors = sensors

    def model_inputs(self, season_stack: np.ndarray) -> dict[str, tuple[Any, list[float]]]:
        """Return the tensors and wavelengths DOFA receives for single-season patches.

        Args:
            season_stack: Canonical channels, ``(N, 27, H, W)``.

        Returns:
            ``{"s1": (tensor (N, 2, 224, 224), µm), "s2": (tensor (N, C, 224, 224), µm)}``
            with ``C`` 13 for L1C and 12 for L2A.
        """
        if self.s2_product == "auto":
            raise InputError("dofa: the Sentinel-2 product is not chosen yet; call prepare() or encode().")
        size = CARD.input_size_px
        s1 = z_score(sensor_bands(season_stack, Sensor.S1, S1_BANDS), S1_MEAN_DB, S1_STD_DB)
        sensor, bands, mean, std = S2_PRODUCTS[self.s2_product]
        s2 = z_score(sensor_bands(season_stack, sensor, bands), mean, std, offset_dn=S2_OFFSET_DN)
        return {
            "s1": (resize_square(s1, size, self.device), [S1_WAVELENGTH_UM] * len(S1_BANDS)),
            "s2": (resize_square(s2, size, self.device), s2_wavelengths_um(bands)),
        }

    def encode(self, stack: np.ndarray, seasons_present: Sequence[bool]) -> np.ndarray:
        """Encode a batch: ``(B, T, 27, H, W)`` -> ``(B, 1536 * T)``, channel-major.

        The present seasons of all patches go through one forward per sensor.

        Raises:
            InputError: If the stack is malformed, no season is present, or a
                needed sensor has no data.
        """
        torch = import_optional("torch", "the DOFA encoder")
        present = check_stack(stack, seasons_present, CARD.name)
        if self._sensors is None:
            # Without prepare(), the sensors are judged once, from the first batch.
            self._resolve_sensors(sensors_with_data(stack, seasons_present))
            logger.info("dofa: Sentinel-2 product chosen from the first batch: %s", self.s2_product)
        batch, seasons = stack.shape[:2]
        season_patches = stack[:, present].reshape(batch * len(present), *stack.shape[2:])
        with torch.inference_mode():
            outputs = [
                self.model.forward_features(tensor, wavelengths)
                for tensor, wavelengths in self.model_inputs(season_patches).values()
            ]
        joint = torch.cat(outputs, dim=1).float().cpu().numpy()
        features = np.zeros((batch, seasons, CARD.width_per_season), dtype=np.float32)
        features[:, present] = joint.reshape(batch, len(present), CARD.width_per_season)
        return to_block(fill_absent_seasons(features, present), CARD.name)
