"""Copernicus-FM ViT-B/16 encoder (torchgeo ``copernicusfm_base``) on S1 + S2."""

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ...raster.bands import S1_BANDS, S2L1C_BANDS, S2L2A_BANDS, Sensor, channel_index
from ...reporting import Reporter
from ._pretrained import PretrainedEncoder, resize_bilinear, zscore
from .base import EncoderCard, WeightsInfo

INPUT_SIZE_PX = 224
KERNEL_SIZE_PX = 16
WIDTH = 768
S2_OFFSET_DN = 1000.0
"""Offset added to S2 DN: the SSL4EO-S12 v1.1 moments below were computed on offset data."""

# Centre wavelengths and bandwidths in nm that Copernicus-Bench configures for
# Sentinel-1 and Sentinel-2. S1 is C band with a 5 cm centre and a 1 m
# bandwidth, the upper limits of the model's Fourier encodings.
S1_WAVELENGTH_NM: tuple[float, ...] = (5e7, 5e7)
S1_BANDWIDTH_NM: tuple[float, ...] = (1e9, 1e9)
S2_WAVELENGTH_NM: dict[str, float] = {
    "B01": 440, "B02": 490, "B03": 560, "B04": 665, "B05": 705, "B06": 740,
    "B07": 783, "B08": 842, "B8A": 860, "B09": 940, "B10": 1370, "B11": 1610, "B12": 2190,
}
S2_BANDWIDTH_NM: dict[str, float] = {
    "B01": 20, "B02": 65, "B03": 35, "B04": 30, "B05": 15, "B06": 15,
    "B07": 20, "B08": 115, "B8A": 20, "B09": 20, "B10": 30, "B11": 90, "B12": 180,
}

# SSL4EO-S12 v1.1 per-band moments, S1 in dB and S2 as DN with the +1000
# offset. The Embed2Scale challenge normalises its data with these values.
S1_MEAN: tuple[float, ...] = (-12.577, -20.265)
S1_STD: tuple[float, ...] = (5.179, 5.872)
S2L1C_MEAN: tuple[float, ...] = (
    2607.345, 2393.068, 2320.225, 2373.963, 2562.536, 3110.071, 3392.832,
    3321.154, 3583.77, 1838.712, 1021.753, 3205.112, 2545.798,
)
S2L1C_STD: tuple[float, ...] = (
    786.523, 849.702, 875.318, 1143.578, 1126.248, 1161.98, 1273.505,
    1246.79, 1342.755, 576.795, 45.626, 1340.347, 1145.036,
)
S2L2A_MEAN: tuple[float, ...] = (
    1793.243, 1924.863, 2184.553, 2340.936, 2671.402, 3240.082,
    3468.412, 3563.244, 3627.704, 3711.071, 3416.714, 2849.625,
)
S2L2A_STD: tuple[float, ...] = (
    1160.144, 1201.092, 1219.943, 1397.225, 1400.035, 1373.136,
    1429.17, 1485.025, 1447.836, 1652.703, 1471.002, 1365.307,
)

_S2_MOMENTS: dict[Sensor, tuple[tuple[str, ...], tuple[float, ...], tuple[float, ...]]] = {
    Sensor.S2L1C: (S2L1C_BANDS, S2L1C_MEAN, S2L1C_STD),
    Sensor.S2L2A: (S2L2A_BANDS, S2L2A_MEAN, S2L2A_STD),
}

CARD = EncoderCard(
    name="copernicusfm",
    title="Copernicus-FM ViT-B/16",
    inputs=((Sensor.S1, S1_BANDS), (Sensor.S2L1C, S2L1C_BANDS)),
    required_sensors=frozenset({Sensor.S1, Sensor.S2L1C}),
    s2_offset_expected=True,
    input_size_px=INPUT_SIZE_PX,
    resize="bilinear with antialiasing",
    season_mode="per_season",
    pooling="CLS token after the final LayerNorm (global_pool=False)",
    width_per_season=WIDTH,
    weights=WeightsInfo(
        file_name="CopernicusFM_ViT_base_varlang_e100.pth",
        url="https://huggingface.co/wangyi111/Copernicus-FM/resolve/main/CopernicusFM_ViT_base_varlang_e100.pth",
        sha256="085350e4fa0ebc6047a501aed1307394c4fcc23c013dd026db65af06411d6bee",
        size_bytes=557_931_327,
        licence="CC-BY-4.0",
    ),
)
"""Model card of Copernicus-FM.

One forward per season on 15 channels: S1 VV, VH (dB) followed by the 13
Sentinel-2 L1C bands B01–B12 with B8A and B10. When L1C is absent the encoder
reads the 12 L2A bands instead (no B10), with a warning. S2 gets the +1000
offset, and both sensors are z-scored with the SSL4EO-S12 v1.1 moments of the
level read. Missing bands and pixels become 0, the band mean. The spectral hypernetwork receives the centre wavelengths and
bandwidths in nm of the Copernicus-Bench configurations (S1: 5e7 and 1e9).
Location, time and patch area are passed as NaN (unknown), so the model uses
its learned metadata tokens. Patches are resized to 224 px (bilinear,
antialiased), kernel size 16.

The checkpoint is the official ``CopernicusFM_ViT_base_varlang_e100.pth``
(torchgeo's ``CopernicusFM_ViT_base_varlang-085350e4.pth`` has the same bytes
and can be imported in its place), which contains the trained final ``norm``; the model is built with
``global_pool=False`` and LayerNorm eps 1e-6 as in the original ViT-B (torchgeo
defaults to 1e-5 and to mean pooling through an untrained ``fc_norm``). The
feature is the CLS token after that norm (768 values), as the winning
Embed2Scale code used. Both sensors are required.
"""


def official_state_dict(model: Any) -> dict[str, Any]:
    """Return ``model``'s weights in the layout of the official checkpoint.

    The official file contains the model's own keys plus the MAE ``mask_token``
    (1, 1, 768).

    NOTE: this layout is inferred from the original repository's demo (loading
    the file left only ``head.*`` missing and ``mask_token`` unexpected) and
    torchgeo 0.8.1's parameter names; the file itself was not available to
    check it.
    """
    import torch

    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, 1, model.cls_token.shape[-1])
    return state


def key_filter(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop the MAE ``mask_token``; every other key must match the model."""
    return {key: value for key, value in state_dict.items() if key != "mask_token"}


def build_model() -> Any:
    """Return torchgeo's Copernicus-FM ViT-B/16 with CLS pooling and eps 1e-6."""
    import torch.nn as nn
    from torchgeo.models import copernicusfm_base

    return copernicusfm_base(
        weights=None, global_pool=False, norm_layer=partial(nn.LayerNorm, eps=1e-6)
    )


def spectral_metadata(s2_sensor: Sensor) -> tuple[list[float], list[float]]:
    """Return the wavelengths and bandwidths in nm of the input channels, in order."""
    s2_bands = _S2_MOMENTS[s2_sensor][0]
    wavelengths = list(S1_WAVELENGTH_NM) + [S2_WAVELENGTH_NM[band] for band in s2_bands]
    bandwidths = list(S1_BANDWIDTH_NM) + [S2_BANDWIDTH_NM[band] for band in s2_bands]
    return wavelengths, bandwidths


class CopernicusFmEncoder(PretrainedEncoder):
    """Copernicus-FM on S1 and S2 together, one forward per season."""

    card = CARD
    title = "Copernicus-FM"
    preferred_s2_level = "l1c"
    required_s1 = True

    def __init__(
        self,
        device: str = "cpu",
        checkpoint: Path | str | None = None,
        *,
        random_weights: bool = False,
        s2_level: str = "auto",
        reporter: Reporter | None = None,
    ) -> None:
        """Build Copernicus-FM ViT-B/16 and load the checkpoint strictly.

        Args:
            device: torch device string.
            checkpoint: ``CopernicusFM_ViT_base_varlang_e100.pth``.
            random_weights: Whether to run on random weights (tests only).
            s2_level: ``"auto"`` (L1C, else L2A), ``"l1c"`` or ``"l2a"``.
            reporter: Receives the decisions that change results.
        """
        super().__init__(
            device, checkpoint, random_weights=random_weights, s2_level=s2_level, reporter=reporter
        )
        self.reporter.info(
            "Copernicus-FM: S1 VV, VH and S2 with +1000 offset, z-scored with SSL4EO-S12 "
            "v1.1 moments; metadata unknown (NaN); CLS token after the final norm."
        )

    def _build_model(self) -> Any:
        return build_model()

    def _key_filter(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        return key_filter(state_dict)

    def prepare_input(self, season_stack: np.ndarray, s2_sensor: Sensor = Sensor.S2L1C) -> Any:
        """Return the model input for one season.

        Args:
            season_stack: Canonical stack of one season, ``(B, 27, H, W)``.
            s2_sensor: The Sentinel-2 slot to read.

        Returns:
            Float32 tensor ``(B, 2 + n_s2, 224, 224)``: S1 VV, VH then the S2
            bands, z-scored (S2 after +1000), NaN as 0, resized.
        """
        torch = self._torch
        s2_bands, s2_mean, s2_std = _S2_MOMENTS[s2_sensor]
        s1 = season_stack[:, [channel_index(Sensor.S1, band) for band in S1_BANDS]]
        s2 = season_stack[:, [channel_index(s2_sensor, band) for band in s2_bands]]
        s1_t = torch.from_numpy(np.ascontiguousarray(s1, dtype=np.float32))
        s2_t = torch.from_numpy(np.ascontiguousarray(s2, dtype=np.float32)) + S2_OFFSET_DN
        normalised = torch.cat([zscore(s1_t, S1_MEAN, S1_STD), zscore(s2_t, s2_mean, s2_std)], dim=1)
        return resize_bilinear(normalised.to(self.device), INPUT_SIZE_PX)

    def forward(self, model_input: Any, s2_sensor: Sensor) -> Any:
        """Return the CLS features ``(B, 768)`` of a prepared input."""
        torch = self._torch
        wavelengths, bandwidths = spectral_metadata(s2_sensor)
        metadata = torch.full((model_input.shape[0], 4), float("nan"), device=model_input.device)
        return self.model.forward_features(
            model_input,
            metadata,
            wavelengths=wavelengths,
            bandwidths=bandwidths,
            input_mode="spectral",
            kernel_size=KERNEL_SIZE_PX,
        )

    def _encode_seasons(
        self, stack: np.ndarray, seasons: Sequence[int], s2_sensor: Sensor
    ) -> np.ndarray:
        torch = self._torch
        features = []
        with torch.inference_mode():
            for season in seasons:
                model_input = self.prepare_input(stack[:, season], s2_sensor)
                features.append(self.forward(model_input, s2_sensor).float().cpu().numpy())
        return np.stack(features, axis=1)
