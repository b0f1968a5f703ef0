"""Prithvi-EO-2.0 300M encoder: six HLS bands, the seasons as time frames of one forward."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...raster.bands import Sensor, channel_index
from ...reporting import Reporter
from ._pretrained import PretrainedEncoder, resize_bilinear, zscore
from .base import EncoderCard, WeightsInfo

HLS_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B8A", "B11", "B12")
"""Sentinel-2 bands matching HLS blue, green, red, narrow NIR, SWIR 1, SWIR 2, in this order."""

# Prithvi-EO-2.0 pre-training statistics of the HLS bands (reflectance ×
# 10000, no +1000 offset).
HLS_MEAN: tuple[float, ...] = (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
HLS_STD: tuple[float, ...] = (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)
INPUT_SIZE_PX = 224
PATCH_SIZE_PX = 16
WIDTH = 1024
# Token count and decoder shape of the published MAE checkpoint (img 224,
# 4 frames, decoder 512 wide and 8 deep), used to write that layout.
_CHECKPOINT_FRAMES = 4
_DECODER_WIDTH = 512
_DECODER_DEPTH = 8

CARD = EncoderCard(
    name="prithvi",
    title="Prithvi-EO-2.0 300M",
    inputs=((Sensor.S2L2A, HLS_BANDS),),
    required_sensors=frozenset({Sensor.S2L2A}),
    s2_offset_expected=False,
    input_size_px=INPUT_SIZE_PX,
    resize="bilinear with antialiasing",
    season_mode="time_frames",
    pooling="mean of each frame's patch tokens after the final LayerNorm",
    width_per_season=WIDTH,
    weights=WeightsInfo(
        file_name="Prithvi_EO_V2_300M.pt",
        url=(
            "https://huggingface.co/ibm-nasa-geospatial/Prithvi-EO-2.0-300M/resolve/"
            "9eb1b1102806593963daa333bcc491b1c6f8562f/Prithvi_EO_V2_300M.pt"
        ),
        sha256="faab2c8b776f0723f93431747603a7ec586a54fc45473613b4322c29752486e7",
        size_bytes=1_326_658_396,
        licence="Apache-2.0",
    ),
)
"""Model card of Prithvi-EO-2.0 300M.

The encoder reads six bands B02, B03, B04, B8A, B11, B12, the HLS bands
Prithvi was trained on, as digital numbers without the +1000 offset. They are
z-scored with Prithvi's own mean (1087, 1342, 1433, 2734, 1958, 1363) and std
(2248, 2179, 2178, 1850, 1242, 1049). HLS is surface reflectance, so the encoder reads L2A and falls back to
L1C with a warning. Missing pixels become 0 (the band mean). Patches are
resized to 224 px (bilinear, antialiased).

The present seasons enter one forward as time frames ``(B, 6, T, 224, 224)``.
Each frame keeps its season index as temporal position in the 3-D sine-cosine
embedding, so an absent spring does not shift summer to frame 0. The feature
of a season is the mean of its frame's patch tokens after the final norm
(1024 values); absent seasons get the mean of the present seasons' features.

The winning Embed2Scale code built a ViT-B default configuration, loaded the
600M checkpoint into it with ``strict=False`` (so nothing loaded), and fed
L1C bands shifted by one (B03, B04, B05, B8A, B11, B12). This encoder uses the
300M architecture, loads the checkpoint strictly and feeds the HLS bands.
"""


def _decoder_shapes() -> dict[str, tuple[int, ...]]:
    """Return the shapes of the MAE decoder entries of the published checkpoint."""
    shapes: dict[str, tuple[int, ...]] = {
        "decoder.decoder_embed.weight": (_DECODER_WIDTH, WIDTH),
        "decoder.decoder_embed.bias": (_DECODER_WIDTH,),
        "decoder.mask_token": (1, 1, _DECODER_WIDTH),
        "decoder.decoder_pos_embed": (1, 1 + _CHECKPOINT_FRAMES * (INPUT_SIZE_PX // PATCH_SIZE_PX) ** 2, _DECODER_WIDTH),
        "decoder.decoder_norm.weight": (_DECODER_WIDTH,),
        "decoder.decoder_norm.bias": (_DECODER_WIDTH,),
        "decoder.decoder_pred.weight": (PATCH_SIZE_PX * PATCH_SIZE_PX * len(HLS_BANDS), _DECODER_WIDTH),
        "decoder.decoder_pred.bias": (PATCH_SIZE_PX * PATCH_SIZE_PX * len(HLS_BANDS),),
    }
    hidden = 4 * _DECODER_WIDTH
    for index in range(_DECODER_DEPTH):
        prefix = f"decoder.decoder_blocks.{index}."
        shapes |= {
            prefix + "norm1.weight": (_DECODER_WIDTH,),
            prefix + "norm1.bias": (_DECODER_WIDTH,),
            prefix + "attn.qkv.weight": (3 * _DECODER_WIDTH, _DECODER_WIDTH),
            prefix + "attn.qkv.bias": (3 * _DECODER_WIDTH,),
            prefix + "attn.proj.weight": (_DECODER_WIDTH, _DECODER_WIDTH),
            prefix + "attn.proj.bias": (_DECODER_WIDTH,),
            prefix + "norm2.weight": (_DECODER_WIDTH,),
            prefix + "norm2.bias": (_DECODER_WIDTH,),
            prefix + "mlp.fc1.weight": (hidden, _DECODER_WIDTH),
            prefix + "mlp.fc1.bias": (hidden,),
            prefix + "mlp.fc2.weight": (_DECODER_WIDTH, hidden),
            prefix + "mlp.fc2.bias": (_DECODER_WIDTH,),
        }
    return shapes


def official_state_dict(model: Any, include_decoder: bool = True) -> dict[str, Any]:
    """Return ``model``'s weights in the layout of ``Prithvi_EO_V2_300M.pt``.

    The published file is the whole MAE: encoder keys under ``encoder.``
    (including a stored ``encoder.pos_embed`` for 4 frames of 14×14 patches)
    and the decoder under ``decoder.``. Decoder entries are written as zeros
    of the published shapes, because the encoder never reads them.

    Args:
        model: A :class:`~.prithvi_vit.PrithviViT`.
        include_decoder: Whether to add the decoder entries.
    """
    import torch

    from .prithvi_vit import sincos_3d

    grid = INPUT_SIZE_PX // PATCH_SIZE_PX
    state = {f"encoder.{key}": value.detach().clone() for key, value in model.state_dict().items()}
    state["encoder.pos_embed"] = sincos_3d(WIDTH, range(_CHECKPOINT_FRAMES), grid, grid).unsqueeze(0)
    if include_decoder:
        for key, shape in _decoder_shapes().items():
            state[key] = torch.zeros(shape)
    return state


def key_filter(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Map the MAE checkpoint to the encoder's keys.

    Strips the ``encoder.`` prefix, drops every ``decoder*`` and
    ``mask_token`` entry, and drops the stored ``pos_embed`` because the model
    computes its own for the input grid. Every other key must match.
    """
    filtered = {}
    for key, value in state_dict.items():
        if key.startswith("decoder") or key.rsplit(".", 1)[-1] == "mask_token":
            continue
        name = key.removeprefix("encoder.")
        if name == "pos_embed":
            continue
        filtered[name] = value
    return filtered


def build_model() -> Any:
    """Return the Prithvi-EO-2.0 300M encoder with fresh weights."""
    from .prithvi_vit import PrithviViT

    return PrithviViT(in_chans=len(HLS_BANDS), embed_dim=WIDTH, depth=24, num_heads=16)


class PrithviEncoder(PretrainedEncoder):
    """Prithvi-EO-2.0 300M with the present seasons as time frames of one forward."""

    card = CARD
    title = "Prithvi-EO-2.0"
    preferred_s2_level = "l2a"

    def __init__(
        self,
        device: str = "cpu",
        checkpoint: Path | str | None = None,
        *,
        random_weights: bool = False,
        s2_level: str = "auto",
        input_size_px: int = INPUT_SIZE_PX,
        reporter: Reporter | None = None,
    ) -> None:
        """Build the Prithvi-EO-2.0 300M encoder and load the checkpoint strictly.

        Args:
            device: torch device string.
            checkpoint: ``Prithvi_EO_V2_300M.pt``.
            random_weights: Whether to run on random weights (tests only).
            s2_level: ``"auto"`` (L2A, else L1C), ``"l1c"`` or ``"l2a"``.
            input_size_px: Side of the model input, a multiple of 16
                (224 as in pre-training).
            reporter: Receives the decisions that change results.

        Raises:
            InputError: If ``input_size_px`` is not a positive multiple of 16.
        """
        if input_size_px < PATCH_SIZE_PX or input_size_px % PATCH_SIZE_PX:
            raise InputError(
                f"Prithvi-EO-2.0: input_size_px is {input_size_px}; expected a positive "
                f"multiple of {PATCH_SIZE_PX}, for example {INPUT_SIZE_PX}."
            )
        self.input_size_px = int(input_size_px)
        super().__init__(
            device, checkpoint, random_weights=random_weights, s2_level=s2_level, reporter=reporter
        )
        self.reporter.info(
            "Prithvi-EO-2.0: bands B02, B03, B04, B8A, B11, B12 without offset, Prithvi "
            f"mean/std; seasons as time frames at {self.input_size_px} px; mean of each "
            "frame's tokens."
        )
        if self.input_size_px != INPUT_SIZE_PX:
            self.reporter.warning(
                f"Prithvi-EO-2.0: input size {self.input_size_px} px differs from the "
                f"pre-training size {INPUT_SIZE_PX} px."
            )

    def _build_model(self) -> Any:
        return build_model()

    def _key_filter(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        return key_filter(state_dict)

    def settings(self) -> dict[str, Any]:
        """Return the settings that define the output."""
        return super().settings() | {"input_size_px": self.input_size_px}

    def prepare_input(
        self, stack: np.ndarray, seasons: Sequence[int], s2_sensor: Sensor = Sensor.S2L2A
    ) -> Any:
        """Return the model input for the given seasons.

        Args:
            stack: Canonical season stack ``(B, T, 27, H, W)``.
            seasons: Indices of the seasons to use as frames, in order.
            s2_sensor: The Sentinel-2 slot to read.

        Returns:
            Float32 tensor ``(B, 6, len(seasons), S, S)`` with
            ``S = input_size_px``: the HLS bands z-scored, NaN as 0, resized.
        """
        torch = self._torch
        indices = [channel_index(s2_sensor, band) for band in HLS_BANDS]
        frames = []
        for season in seasons:
            dn = torch.from_numpy(np.ascontiguousarray(stack[:, season][:, indices], dtype=np.float32))
            frames.append(resize_bilinear(zscore(dn, HLS_MEAN, HLS_STD).to(self.device), self.input_size_px))
        return torch.stack(frames, dim=2)

    def forward(self, model_input: Any, seasons: Sequence[int]) -> Any:
        """Return per-frame features ``(B, T, 1024)``: the mean of each frame's patch tokens."""
        tokens = self.model(model_input, frame_positions=list(seasons))
        batch, frames = model_input.shape[0], model_input.shape[2]
        return tokens[:, 1:].reshape(batch, frames, -1, tokens.shape[-1]).mean(dim=2)

    def _encode_seasons(
        self, stack: np.ndarray, seasons: Sequence[int], s2_sensor: Sensor
    ) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            model_input = self.prepare_input(stack, seasons, s2_sensor)
            return self.forward(model_input, seasons).float().cpu().numpy()
