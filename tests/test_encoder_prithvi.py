"""Prithvi-EO-2.0 encoder: own ViT module, strict checkpoint loading, time frames, band routing."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from worldcereal_stack import constant_stack, read_season_stack

from fusedeo.errors import InputError, ModelFileError
from fusedeo.models.encoders import create_encoder
from fusedeo.models.encoders.prithvi import (
    CARD,
    HLS_BANDS,
    HLS_MEAN,
    HLS_STD,
    PrithviEncoder,
    build_model,
    key_filter,
    official_state_dict,
)
from fusedeo.models.encoders.prithvi_vit import sincos_3d
from fusedeo.raster.bands import S2L1C_BANDS, S2L2A_BANDS, Sensor
from fusedeo.reporting import LoggingReporter

ALL_SEASONS = [True, True, True, True]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-size random 300M encoder saved in the published MAE checkpoint's layout."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prithvi") / CARD.weights.file_name
    torch.save(official_state_dict(build_model()), path)
    return path


@pytest.fixture(scope="module")
def encoder(checkpoint: Path) -> PrithviEncoder:
    """The encoder with ``checkpoint`` loaded strictly, at 64 px to keep forwards short."""
    return PrithviEncoder(checkpoint=checkpoint, input_size_px=64, reporter=LoggingReporter("test"))


def capture_model_call(encoder: PrithviEncoder, stack: np.ndarray, seasons: list[bool]) -> dict:
    """Run ``encode`` and return the input tensor and frame positions the ViT received."""
    calls = []

    def record(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append({"x": args[0].clone(), "frame_positions": kwargs["frame_positions"]})

    hook = encoder.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        encoder.encode(stack, seasons)
    finally:
        hook.remove()
    assert len(calls) == 1
    return calls[0]


def test_official_layout_has_mae_parts(checkpoint: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    assert state["encoder.patch_embed.proj.weight"].shape == (1024, 6, 1, 16, 16)
    assert state["encoder.pos_embed"].shape == (1, 1 + 4 * 14 * 14, 1024)
    assert state["decoder.mask_token"].shape == (1, 1, 512)
    assert len([key for key in state if key.startswith("encoder.blocks.")]) == 24 * 12


def test_checkpoint_loads_every_tensor(encoder: PrithviEncoder, checkpoint: Path) -> None:
    stored = key_filter(torch.load(checkpoint, weights_only=True))
    loaded = encoder.model.state_dict()
    assert "pos_embed" not in stored
    assert stored.keys() == loaded.keys()
    for key, value in stored.items():
        assert torch.equal(value, loaded[key]), key


def test_checkpoint_key_mismatch_lists_keys(checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    del state["encoder.blocks.23.mlp.fc2.bias"]
    state["encoder.temporal_embed_enc.scale"] = torch.ones(1)
    broken = tmp_path / "broken.pt"
    torch.save(state, broken)
    with pytest.raises(ModelFileError, match=r"missing keys 1: blocks\.23\.mlp\.fc2\.bias") as info:
        PrithviEncoder(checkpoint=broken)
    assert "unexpected keys 1: temporal_embed_enc.scale" in str(info.value)


def test_checkpoint_of_other_width_rejected(tmp_path: Path) -> None:
    state = {key: torch.zeros(2) for key in official_state_dict(build_model(), include_decoder=False)}
    wrong = tmp_path / "wrong.pt"
    torch.save(state, wrong)
    with pytest.raises(ModelFileError, match="tensors of the wrong shape"):
        PrithviEncoder(checkpoint=wrong)


def test_missing_checkpoint_rejected() -> None:
    with pytest.raises(ModelFileError, match="Prithvi-EO-2.0: no checkpoint given"):
        PrithviEncoder()


def test_invalid_input_size_rejected() -> None:
    with pytest.raises(InputError, match="input_size_px is 40; expected a positive multiple of 16"):
        PrithviEncoder(random_weights=True, input_size_px=40)


def test_position_embedding_layout() -> None:
    table = sincos_3d(1024, [0, 1, 2, 3], 14, 14)
    assert table.shape == (1 + 4 * 196, 1024)
    assert torch.count_nonzero(table[0]) == 0
    # Token of frame 2, row 5, column 7: columns use 384 channels, rows 384,
    # frames 256, each as sines followed by cosines.
    token = table[1 + 2 * 196 + 5 * 14 + 7]
    for offset, size, position in ((0, 384, 7), (384, 384, 5), (768, 256, 2)):
        half = size // 2
        for i in (0, 1, half - 1):
            angle = position / 10000 ** (i / half)
            assert math.isclose(token[offset + i].item(), math.sin(angle), abs_tol=1e-6)
            assert math.isclose(token[offset + half + i].item(), math.cos(angle), abs_tol=1e-6)
    # Absent seasons keep the temporal code of the seasons that remain.
    subset = sincos_3d(1024, [0, 2, 3], 14, 14)
    assert torch.equal(subset[1 + 196 : 1 + 2 * 196], table[1 + 2 * 196 : 1 + 3 * 196])


@pytest.mark.slow
def test_real_patch_full_size_repeatable(checkpoint: Path, worldcereal_a: Path) -> None:
    encoder = PrithviEncoder(checkpoint=checkpoint)
    stack = read_season_stack(worldcereal_a)
    first = encoder.encode(stack, ALL_SEASONS)
    second = encoder.encode(stack, ALL_SEASONS)
    assert encoder.settings() == {"s2_level": "l2a", "random_weights": False, "input_size_px": 224}
    assert first.shape == (1, encoder.block().width)
    assert encoder.block().width == 1024 * 4
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)


def test_real_patch_shape_finite_repeatable(encoder: PrithviEncoder, worldcereal_b: Path) -> None:
    stack = read_season_stack(worldcereal_b)
    first = encoder.encode(stack, ALL_SEASONS)
    second = encoder.encode(stack, ALL_SEASONS)
    assert first.shape == (1, 4096)
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)
    per_season = first.reshape(1, 1024, 4)
    assert not np.allclose(per_season[..., 0], per_season[..., 1])


def test_features_are_frame_token_means(encoder: PrithviEncoder, worldcereal_a: Path) -> None:
    stack = read_season_stack(worldcereal_a, size_px=32)
    output = encoder.encode(stack, ALL_SEASONS).reshape(1, 1024, 4)
    with torch.inference_mode():
        model_input = encoder.prepare_input(stack, [0, 1, 2, 3], Sensor.S2L2A)
        tokens = encoder.model(model_input, frame_positions=[0, 1, 2, 3])
    per_frame = tokens[0, 1:].reshape(4, 16, 1024).mean(dim=1)
    for season in range(4):
        assert np.abs(output[0, :, season] - per_frame[season].numpy()).max() <= 1e-5


def test_band_routing_frames_and_normalisation(encoder: PrithviEncoder) -> None:
    values = {(Sensor.S2L2A, band): 100.0 * (index + 1) for index, band in enumerate(S2L2A_BANDS)}
    values |= {(Sensor.S2L1C, band): 5.0 for band in S2L1C_BANDS}
    stack = constant_stack(values, size_px=64)
    for season in range(4):
        stack[0, season, 2 + 13 :] += 1000.0 * season
    stack[0, 3, 2 + 13 + S2L2A_BANDS.index("B11"), 8, 9] = np.nan
    call = capture_model_call(encoder, stack, [True, False, True, True])

    assert call["x"].shape == (1, 6, 3, 64, 64)
    assert call["frame_positions"] == [0, 2, 3]
    for frame, season in enumerate((0, 2, 3)):
        for channel, band in enumerate(HLS_BANDS):
            dn = 100.0 * (S2L2A_BANDS.index(band) + 1) + 1000.0 * season
            expected = (dn - HLS_MEAN[channel]) / HLS_STD[channel]
            assert math.isclose(call["x"][0, channel, frame, 0, 0].item(), expected, abs_tol=1e-5), (band, season)
    assert call["x"][0, HLS_BANDS.index("B11"), 2, 8, 9] == 0.0


def test_absent_seasons_get_mean(encoder: PrithviEncoder, worldcereal_a: Path) -> None:
    stack = read_season_stack(worldcereal_a, size_px=32)
    output = encoder.encode(stack, [True, True, False, False]).reshape(1, 1024, 4)
    expected = output[..., :2].mean(axis=-1)
    assert np.allclose(output[..., 2], expected, atol=1e-6)
    assert np.allclose(output[..., 3], expected, atol=1e-6)


def test_l1c_used_when_l2a_absent() -> None:
    reporter = LoggingReporter("test")
    encoder = create_encoder("prithvi", random_weights=True, input_size_px=32, reporter=reporter)
    values = {(Sensor.S2L1C, band): 1500.0 for band in S2L1C_BANDS}
    call = capture_model_call(encoder, constant_stack(values, size_px=32), ALL_SEASONS)
    assert encoder.settings() == {"s2_level": "l1c", "random_weights": True, "input_size_px": 32}
    warnings = [text for kind, text in reporter.messages if kind == "warning"]
    assert any("L2A is absent, so it reads L1C" in text for text in warnings)
    assert any("RANDOM weights" in text for text in warnings)
    expected_b02 = (1500.0 - HLS_MEAN[0]) / HLS_STD[0]
    assert math.isclose(call["x"][0, 0, 0, 0, 0].item(), expected_b02, abs_tol=1e-5)


def test_missing_sentinel2_rejected() -> None:
    encoder = PrithviEncoder(random_weights=True, input_size_px=16)
    stack = constant_stack({(Sensor.S1, "VV"): -10.0, (Sensor.S1, "VH"): -17.0}, size_px=16)
    with pytest.raises(InputError, match=r"Prithvi-EO-2.0 needs Sentinel-2 \(L1C or L2A\)"):
        encoder.encode(stack, ALL_SEASONS)
