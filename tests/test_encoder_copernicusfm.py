"""Copernicus-FM encoder: strict checkpoint loading, real-patch forwards, band routing."""

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from worldcereal_stack import constant_stack, read_season_stack

from fusedeo.errors import InputError, ModelFileError
from fusedeo.models.encoders import create_encoder
from fusedeo.models.encoders.copernicusfm import (
    CARD,
    S1_MEAN,
    S1_STD,
    S2L1C_MEAN,
    S2L1C_STD,
    S2L2A_MEAN,
    S2L2A_STD,
    CopernicusFmEncoder,
    build_model,
    key_filter,
    official_state_dict,
)
from fusedeo.raster.bands import S2L1C_BANDS, S2L2A_BANDS, Sensor
from fusedeo.reporting import LoggingReporter

ALL_SEASONS = [True, True, True, True]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-size random ViT-B/16 saved in the official checkpoint's key layout."""
    torch.manual_seed(0)
    model = build_model()
    # Random non-trivial values for the parts that start as zeros or ones, so
    # that a wrong eps, pooling or metadata token shows in the outputs.
    with torch.no_grad():
        for name in ("cls_token", "coord_token", "scale_token", "time_token"):
            getattr(model, name).normal_(std=0.5)
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.normal_(std=0.1)
    path = tmp_path_factory.mktemp("copernicusfm") / CARD.weights.file_name
    torch.save(official_state_dict(model), path)
    return path


@pytest.fixture(scope="module")
def encoder(checkpoint: Path) -> CopernicusFmEncoder:
    """The encoder with ``checkpoint`` loaded strictly (``s2_level`` auto)."""
    return CopernicusFmEncoder(checkpoint=checkpoint, reporter=LoggingReporter("test"))


def capture_patch_embed(encoder: CopernicusFmEncoder, stack: np.ndarray, seasons: list[bool]) -> list[dict]:
    """Run ``encode`` and return the input and spectral metadata the patch embedding received."""
    calls = []

    def record(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append(
            {
                "x": args[0].clone(),
                "wavelengths": kwargs["wavelengths"].tolist(),
                "bandwidths": kwargs["bandwidths"].tolist(),
            }
        )

    hook = encoder.model.patch_embed_spectral.register_forward_pre_hook(record, with_kwargs=True)
    try:
        encoder.encode(stack, seasons)
    finally:
        hook.remove()
    return calls


def test_official_file_has_mask_token_and_trained_norm(checkpoint: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    assert state["mask_token"].shape == (1, 1, 768)
    assert "norm.weight" in state
    assert not any(key.startswith(("fc_norm", "head")) for key in state)


def test_checkpoint_loads_every_tensor(encoder: CopernicusFmEncoder, checkpoint: Path) -> None:
    stored = key_filter(torch.load(checkpoint, weights_only=True))
    loaded = encoder.model.state_dict()
    assert stored.keys() == loaded.keys()
    for key, value in stored.items():
        assert torch.equal(value, loaded[key]), key


def test_model_uses_cls_pooling_and_eps(encoder: CopernicusFmEncoder) -> None:
    assert encoder.model.global_pool is False
    assert encoder.model.norm.eps == 1e-6
    assert encoder.model.blocks[0].norm1.eps == 1e-6


def test_checkpoint_key_mismatch_lists_keys(checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    del state["time_token"]
    del state["norm.bias"]
    state["fc_norm.weight"] = torch.ones(768)
    broken = tmp_path / "broken.pth"
    torch.save({"model": state}, broken)
    with pytest.raises(ModelFileError, match=r"missing keys 2: norm\.bias, time_token") as info:
        CopernicusFmEncoder(checkpoint=broken)
    assert "unexpected keys 1: fc_norm.weight" in str(info.value)


def test_missing_checkpoint_rejected() -> None:
    with pytest.raises(ModelFileError, match="Copernicus-FM: no checkpoint given"):
        CopernicusFmEncoder()


def test_real_patch_shape_finite_repeatable(encoder: CopernicusFmEncoder, worldcereal_a: Path) -> None:
    stack = read_season_stack(worldcereal_a)
    first = encoder.encode(stack, ALL_SEASONS)
    second = encoder.encode(stack, ALL_SEASONS)
    assert first.shape == (1, encoder.block().width)
    assert encoder.block().width == 768 * 4
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)
    per_season = first.reshape(1, 768, 4)
    assert not np.allclose(per_season[..., 0], per_season[..., 2])
    # The fixtures have no L1C, so the encoder falls back to L2A.
    assert encoder.settings()["s2_level"] == "l2a"


def test_matches_torchgeo_model(encoder: CopernicusFmEncoder, checkpoint: Path, worldcereal_b: Path) -> None:
    from torchgeo.models import copernicusfm_base

    reference = copernicusfm_base(
        weights=None, global_pool=False, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)
    )
    reference.load_state_dict(key_filter(torch.load(checkpoint, weights_only=True)), strict=True)
    reference.eval()
    stack = read_season_stack(worldcereal_b)
    output = encoder.encode(stack, ALL_SEASONS).reshape(1, 768, 4)
    wavelengths = [5e7, 5e7, 440, 490, 560, 665, 705, 740, 783, 842, 860, 940, 1610, 2190]
    bandwidths = [1e9, 1e9, 20, 65, 35, 30, 15, 15, 20, 115, 20, 20, 90, 180]
    with torch.inference_mode():
        for season in range(4):
            model_input = encoder.prepare_input(stack[:, season], Sensor.S2L2A)
            expected = reference(
                model_input,
                torch.full((1, 4), float("nan")),
                wavelengths=wavelengths,
                bandwidths=bandwidths,
                input_mode="spectral",
                kernel_size=16,
            )
            assert np.abs(output[..., season] - expected.numpy()).max() <= 1e-5


def test_band_routing_l1c_with_offset(checkpoint: Path) -> None:
    encoder = CopernicusFmEncoder(checkpoint=checkpoint, s2_level="auto")
    values = {(Sensor.S1, "VV"): -10.0, (Sensor.S1, "VH"): -18.0}
    values |= {(Sensor.S2L1C, band): 100.0 * (index + 1) for index, band in enumerate(S2L1C_BANDS)}
    values |= {(Sensor.S2L2A, band): 7.0 for band in S2L2A_BANDS}
    stack = constant_stack(values, size_px=224)
    stack[0, 1, 2 + 9, 3, 4] = np.nan  # L1C B09 invalid at (3, 4)
    calls = capture_patch_embed(encoder, stack, [False, True, False, False])

    model_input = calls[0]["x"][0, :, 0, 0]
    assert calls[0]["x"].shape == (1, 15, 224, 224)
    expected_s1 = [(-10.0 - S1_MEAN[0]) / S1_STD[0], (-18.0 - S1_MEAN[1]) / S1_STD[1]]
    expected_s2 = [
        (100.0 * (index + 1) + 1000.0 - S2L1C_MEAN[index]) / S2L1C_STD[index] for index in range(13)
    ]
    assert torch.allclose(model_input, torch.tensor(expected_s1 + expected_s2), atol=1e-5)
    assert calls[0]["x"][0, 2 + 9, 3, 4] == 0.0
    assert calls[0]["wavelengths"] == [5e7, 5e7, 440, 490, 560, 665, 705, 740, 783, 842, 860, 940, 1370, 1610, 2190]
    assert calls[0]["bandwidths"] == [1e9, 1e9, 20, 65, 35, 30, 15, 15, 20, 115, 20, 20, 30, 90, 180]
    assert encoder.settings()["s2_level"] == "l1c"


def test_band_routing_l2a_fallback(encoder: CopernicusFmEncoder) -> None:
    values = {(Sensor.S1, "VV"): -12.0, (Sensor.S1, "VH"): -19.0}
    values |= {(Sensor.S2L2A, band): 50.0 * (index + 1) for index, band in enumerate(S2L2A_BANDS)}
    stack = constant_stack(values, size_px=48)
    stack[:, :, 2 + 13 + S2L2A_BANDS.index("B01")] = np.nan  # B01 missing, as in the fixtures
    calls = capture_patch_embed(encoder, stack, [True, False, False, False])

    model_input = calls[0]["x"][0, :, 100, 100]
    assert calls[0]["x"].shape == (1, 14, 224, 224)
    expected_s2 = [
        (50.0 * (index + 1) + 1000.0 - S2L2A_MEAN[index]) / S2L2A_STD[index] for index in range(12)
    ]
    expected_s2[0] = 0.0
    assert torch.allclose(model_input[2:], torch.tensor(expected_s2), atol=1e-5)
    assert 1370 not in calls[0]["wavelengths"]


def test_absent_seasons_get_mean(encoder: CopernicusFmEncoder, worldcereal_a: Path) -> None:
    stack = read_season_stack(worldcereal_a, size_px=32)
    output = encoder.encode(stack, [False, True, True, True]).reshape(1, 768, 4)
    expected = output[..., 1:].mean(axis=-1)
    assert np.allclose(output[..., 0], expected, atol=1e-6)


def test_missing_sentinel1_rejected(encoder: CopernicusFmEncoder) -> None:
    stack = constant_stack({(Sensor.S2L2A, band): 900.0 for band in S2L2A_BANDS}, size_px=16)
    with pytest.raises(InputError, match=r"Copernicus-FM needs Sentinel-1 \(VV, VH\)"):
        encoder.encode(stack, ALL_SEASONS)


def test_registry_builds_encoder(checkpoint: Path) -> None:
    encoder = create_encoder("copernicusfm", checkpoint=checkpoint, s2_level="l2a")
    assert isinstance(encoder, CopernicusFmEncoder)
    assert encoder.settings() == {"s2_level": "l2a", "random_weights": False}
