"""Input helpers shared by the foundation-model encoders.

They check the canonical season stack, normalise bands, resize patches and
turn per-season features into a fused block. torch is imported inside the
functions that need it.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InputError, ModelFileError, import_optional
from ...raster.bands import STACK_CHANNELS, Sensor, sensor_channel_slice


def z_score(
    values: np.ndarray, mean: Sequence[float], std: Sequence[float], offset_dn: float = 0.0
) -> np.ndarray:
    """Return ``(values + offset_dn - mean) / std`` per band, with NaN set to 0.

    Args:
        values: Bands of one sensor, ``(B, C, H, W)``; NaN where missing.
        mean: Per-band mean, ``C`` values.
        std: Per-band standard deviation, ``C`` values.
        offset_dn: Added before normalising (1000 for weights trained on
            Sentinel-2 data that carries the processing-baseline offset).

    Returns:
        float32 ``(B, C, H, W)``. Missing values become 0, the band mean.
    """
    mean_a = np.asarray(mean, dtype=np.float32)[None, :, None, None]
    std_a = np.asarray(std, dtype=np.float32)[None, :, None, None]
    z = (values.astype(np.float32) + np.float32(offset_dn) - mean_a) / std_a
    return np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)


def resize_square(values: np.ndarray, size_px: int, device: str) -> Any:
    """Return ``values`` ``(N, C, H, W)`` as a float32 tensor of side ``size_px`` on ``device``.

    Resizing is bilinear with antialiasing (as torchvision's ``Resize`` with
    ``antialias=True``); a patch that already has the size is not resampled.
    """
    torch = import_optional("torch", "running encoders")
    functional = import_optional("torch.nn.functional", "running encoders")
    tensor = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(device)
    if tuple(tensor.shape[-2:]) != (size_px, size_px):
        tensor = functional.interpolate(
            tensor, size=(size_px, size_px), mode="bilinear", align_corners=False, antialias=True
        )
    return tensor


def sensor_bands(season_stack: np.ndarray, sensor: Sensor, bands: Sequence[str]) -> np.ndarray:
    """Return ``bands`` of ``sensor`` from canonical channels ``(..., 27, H, W)``, in order."""
    indices = [STACK_CHANNELS.index((sensor, band)) for band in bands]
    return season_stack[..., indices, :, :]


def sensors_with_data(stack: np.ndarray, seasons_present: Sequence[bool]) -> set[Sensor]:
    """Return the sensors that have a finite value in the present seasons of ``stack``."""
    present = [index for index, flag in enumerate(seasons_present) if flag]
    found = set()
    for sensor in Sensor:
        values = stack[:, present, sensor_channel_slice(sensor)]
        if values.size and np.isfinite(values).any():
            found.add(sensor)
    return found


def check_stack(stack: np.ndarray, seasons_present: Sequence[bool], encoder: str) -> list[int]:
    """Check the canonical stack's shape and return the indices of present seasons.

    Raises:
        InputError: If the shape is not ``(B, T, 27, H, W)``, ``seasons_present``
            has not ``T`` entries, or no season is present.
    """
    if stack.ndim != 5 or stack.shape[2] != len(STACK_CHANNELS):
        raise InputError(
            f"{encoder}: the season stack has shape {stack.shape}; expected (B, T, 27, H, W)."
        )
    if len(seasons_present) != stack.shape[1]:
        raise InputError(
            f"{encoder}: {len(seasons_present)} season flags for a stack with "
            f"{stack.shape[1]} seasons."
        )
    present = [index for index, flag in enumerate(seasons_present) if flag]
    if not present:
        raise InputError(f"{encoder}: no season has input layers; give at least one season.")
    return present


def fill_absent_seasons(features: np.ndarray, present: Sequence[int]) -> np.ndarray:
    """Fill absent seasons of ``(B, T, C)`` features in place with the mean of the present ones."""
    absent = [index for index in range(features.shape[1]) if index not in present]
    if absent:
        features[:, absent] = features[:, list(present)].mean(axis=1, keepdims=True)
    return features


def to_block(features: np.ndarray, encoder: str) -> np.ndarray:
    """Flatten ``(B, T, C)`` features channel-major into ``(B, C * T)`` float32.

    Value ``(c, t)`` lands at index ``c * T + t``, the fused-block layout.

    Raises:
        ModelFileError: If a value is not finite (broken weights).
    """
    if not np.isfinite(features).all():
        raise ModelFileError(
            f"{encoder}: the model returned non-finite features; the checkpoint is "
            "probably damaged. Import or download it again."
        )
    batch, seasons, channels = features.shape
    flat = features.transpose(0, 2, 1).reshape(batch, channels * seasons)
    return np.ascontiguousarray(flat, dtype=np.float32)
