"""Scale-MAE encoder: strict checkpoint loading, real-patch forwards, band routing."""

from pathlib import Path

import numpy as np
import pytest
import torch
from worldcereal_stack import constant_stack, read_season_stack

from fusedeo.errors import InputError, ModelFileError
from fusedeo.models.encoders import create_encoder
from fusedeo.models.encoders.scalemae import (
    CARD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ScaleMaeEncoder,
    build_model,
    key_filter,
    official_state_dict,
)
from fusedeo.raster.bands import Sensor
from fusedeo.reporting import LoggingReporter

pytestmark = pytest.mark.slow
ALL_SEASONS = [True, True, True, True]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-size random ViT-L/16 saved in the published checkpoint's key layout."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("scalemae") / CARD.weights.file_name
    torch.save(official_state_dict(build_model()), path)
    return path


@pytest.fixture(scope="module")
def encoder(checkpoint: Path) -> ScaleMaeEncoder:
    """The encoder with ``checkpoint`` loaded strictly."""
    return ScaleMaeEncoder(checkpoint=checkpoint, reporter=LoggingReporter("test"))


def rgb_expected(dn: float, channel: int) -> float:
    """Return the model input value of a pixel of ``dn`` in RGB channel ``channel``."""
    return (min(dn * 255.0 / 4000.0, 255.0) / 255.0 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]


def test_checkpoint_loads_every_tensor(encoder: ScaleMaeEncoder, checkpoint: Path) -> None:
    stored = key_filter(torch.load(checkpoint, weights_only=True))
    loaded = encoder.model.state_dict()
    assert stored.keys() == loaded.keys()
    for key, value in stored.items():
        assert torch.equal(value, loaded[key]), key


def test_checkpoint_key_mismatch_lists_keys(checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint, weights_only=True)
    del state["blocks.3.norm1.weight"]
    state["extra_head.weight"] = torch.zeros(2)
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(ModelFileError, match=r"missing keys 1: blocks\.3\.norm1\.weight") as info:
        ScaleMaeEncoder(checkpoint=broken)
    assert "unexpected keys 1: extra_head.weight" in str(info.value)


def test_decoder_keys_are_filtered() -> None:
    state = {
        "blocks.0.norm1.weight": torch.ones(2),
        "decoder_embed.weight": torch.zeros(2),
        "decoder_blocks.0.norm1.weight": torch.zeros(2),
        "mask_token": torch.zeros(1, 1, 2),
        "head.weight": torch.zeros(2),
    }
    assert sorted(key_filter(state)) == ["blocks.0.norm1.weight", "head.weight"]


def test_missing_checkpoint_rejected() -> None:
    with pytest.raises(ModelFileError, match="Scale-MAE: no checkpoint given"):
        ScaleMaeEncoder()


def test_missing_checkpoint_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="checkpoint file .*absent.pth not found"):
        ScaleMaeEncoder(checkpoint=tmp_path / "absent.pth")


def test_real_patch_shape_finite_repeatable(encoder: ScaleMaeEncoder, worldcereal_a: Path) -> None:
    stack = read_season_stack(worldcereal_a)
    first = encoder.encode(stack, ALL_SEASONS)
    second = encoder.encode(stack, ALL_SEASONS)
    assert first.shape == (1, encoder.block().width)
    assert encoder.block().width == 1024 * 4
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)
    # Seasons differ on real data, so their features must differ too.
    per_season = first.reshape(1, 1024, 4)
    assert not np.allclose(per_season[..., 0], per_season[..., 1])


def test_matches_torchgeo_model(encoder: ScaleMaeEncoder, checkpoint: Path, worldcereal_b: Path) -> None:
    from torchgeo.models import scalemae_large_patch16

    reference = scalemae_large_patch16(weights=None, num_classes=0)
    reference.load_state_dict(key_filter(torch.load(checkpoint, weights_only=True)), strict=True)
    reference.eval()
    stack = read_season_stack(worldcereal_b)
    output = encoder.encode(stack, ALL_SEASONS).reshape(1, 1024, 4)
    with torch.inference_mode():
        for season in range(4):
            model_input = encoder.prepare_input(stack[:, season], Sensor.S2L2A)
            expected = reference.forward_head(reference.forward_features(model_input), pre_logits=True)
            assert np.abs(output[..., season] - expected.numpy()).max() <= 1e-5


def test_band_routing_rgb_and_normalisation(encoder: ScaleMaeEncoder) -> None:
    stack = constant_stack(
        {
            (Sensor.S2L2A, "B04"): 1000.0,
            (Sensor.S2L2A, "B03"): 2000.0,
            (Sensor.S2L2A, "B02"): 6000.0,
            (Sensor.S2L1C, "B04"): 111.0,
            (Sensor.S2L2A, "B08"): 9999.0,
        },
        size_px=224,
    )
    stack[0, 0, 0, 5, 7] = np.nan  # an S1 pixel: must not matter
    stack[0, 0, 2 + 13 + 3, 10, 20] = np.nan  # L2A B04 invalid at (10, 20)
    captured = []
    hook = encoder.model.patch_embed.register_forward_pre_hook(lambda _m, args: captured.append(args[0].clone()))
    try:
        encoder.encode(stack, [True, False, False, False])
    finally:
        hook.remove()
    model_input = captured[0]
    assert model_input.shape == (1, 3, 224, 224)
    assert torch.allclose(model_input[0, 0, 0, 0], torch.tensor(rgb_expected(1000.0, 0)))
    assert torch.allclose(model_input[0, 1, 0, 0], torch.tensor(rgb_expected(2000.0, 1)))
    # 6000 DN saturates at 255.
    assert torch.allclose(model_input[0, 2, 0, 0], torch.tensor(rgb_expected(4000.0, 2)))
    assert model_input[0, 0, 10, 20] == 0.0
    assert encoder.settings()["s2_level"] == "l2a"


def test_absent_seasons_get_mean(encoder: ScaleMaeEncoder, worldcereal_a: Path) -> None:
    stack = read_season_stack(worldcereal_a, size_px=32)
    output = encoder.encode(stack, [True, False, True, False]).reshape(1, 1024, 4)
    expected = (output[..., 0] + output[..., 2]) / 2
    assert np.allclose(output[..., 1], expected, atol=1e-6)
    assert np.allclose(output[..., 3], expected, atol=1e-6)


def test_missing_sentinel2_rejected(encoder: ScaleMaeEncoder) -> None:
    stack = constant_stack({(Sensor.S1, "VV"): -10.0, (Sensor.S1, "VH"): -17.0}, size_px=16)
    with pytest.raises(InputError, match="Scale-MAE needs Sentinel-2"):
        encoder.encode(stack, ALL_SEASONS)


def test_registry_encoder_falls_back_to_l1c(checkpoint: Path) -> None:
    reporter = LoggingReporter("test")
    encoder = create_encoder("scalemae", checkpoint=checkpoint, rgb_max_dn=3000.0, reporter=reporter)
    assert isinstance(encoder, ScaleMaeEncoder)
    assert encoder.settings() == {
        "s2_level": "auto",
        "random_weights": False,
        "rgb_max_dn": 3000.0,
        "gsd_ratio": 1.0,
    }
    stack = constant_stack({(Sensor.S2L1C, band): 500.0 for band in ("B02", "B03", "B04")}, size_px=32)
    captured = []
    hook = encoder.model.patch_embed.register_forward_pre_hook(lambda _m, args: captured.append(args[0].clone()))
    try:
        encoder.encode(stack, [False, True, False, False])
    finally:
        hook.remove()
    assert encoder.settings()["s2_level"] == "l1c"
    warnings = [text for kind, text in reporter.messages if kind == "warning"]
    assert any("L2A is absent, so it reads L1C" in text for text in warnings)
    expected_red = (500.0 * 255.0 / 3000.0 / 255.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert torch.allclose(captured[0][0, 0, 0, 0], torch.tensor(expected_red))
