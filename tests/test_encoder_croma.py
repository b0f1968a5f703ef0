"""CROMA encoder: ALiBi bias, band routing, checkpoint loading, torchgeo parity.

The fixture model is the full-size CROMA-Large at 120 px (its pretraining
size) to keep forwards short; the 264 px runs are marked slow.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import LOCATION_A
from stack_by_hand import FileServer, weights_entry, worldcereal_stack

from fusedeo.errors import CheckpointKeyError, InputError
from fusedeo.models.encoders import create_encoder, croma
from fusedeo.models.weights import WeightStore
from fusedeo.raster.bands import S2L1C_BANDS, S2L2A_BANDS, STACK_CHANNELS, Sensor, channel_index
from fusedeo.reporting import LoggingReporter

torch = pytest.importorskip("torch")

SIZE_PX = 120


@pytest.fixture(scope="module")
def random_encoder() -> croma.CromaEncoder:
    """Full-size CROMA-Large with seeded random weights, at 120 px."""
    return croma.CromaEncoder(random_weights=True, seed=3, input_size_px=SIZE_PX)


@pytest.fixture(scope="module")
def official_checkpoint(random_encoder: croma.CromaEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random encoder's weights in the published nested layout (about 2.7 GB)."""
    path = tmp_path_factory.mktemp("croma") / "CROMA_large-test.pt"
    torch.save(croma.official_checkpoint_state(random_encoder.model), path)
    return path


@pytest.fixture(scope="module")
def stack_a() -> np.ndarray:
    """WorldCereal location A, ``(1, 4, 27, 64, 64)``."""
    return worldcereal_stack(LOCATION_A)


def reference_model(checkpoint: Path, size_px: int):  # noqa: ANN201
    """torchgeo's croma_large loaded the way torchgeo loads the published file."""
    from torchgeo.models.croma import croma_large, get_2dalibi

    with torch.device("meta"):
        model = croma_large(weights=None, image_size=8)
    state = torch.load(checkpoint, weights_only=True)
    for part in ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder"):
        getattr(model, part).load_state_dict(state[part], strict=True, assign=True)
    model.attn_bias = get_2dalibi(num_heads=16, num_patches=(size_px // 8) ** 2)
    return model.eval()


def test_alibi_bias_equals_torchgeo():
    from torchgeo.models.croma import get_2dalibi

    assert torch.equal(croma.alibi_bias(16, 15), get_2dalibi(num_heads=16, num_patches=225))
    assert torch.equal(croma.alibi_bias(16, 4), get_2dalibi(num_heads=16, num_patches=16))


@pytest.mark.slow
def test_alibi_bias_equals_torchgeo_at_264_px():
    from torchgeo.models.croma import get_2dalibi

    assert torch.equal(croma.alibi_bias(16, 33), get_2dalibi(num_heads=16, num_patches=1089))


def test_missing_checkpoint_raises():
    with pytest.raises(InputError, match="croma: no checkpoint given. FusedEO never runs CROMA on unverified weights"):
        croma.CromaEncoder()


def test_input_size_must_be_multiple_of_patch():
    with pytest.raises(InputError, match="croma: input_size_px=100 is invalid; expected a positive multiple of 8"):
        croma.CromaEncoder(random_weights=True, input_size_px=100)


def test_missing_l2a_raises(random_encoder: croma.CromaEncoder):
    with pytest.raises(InputError, match=r"croma: the encoder needs Sentinel-1 \(VV, VH\) and Sentinel-2 L2A layers, but no s2l2a"):
        random_encoder.prepare({Sensor.S1, Sensor.S2L1C}, LoggingReporter())


def test_band_routing_and_scaling(random_encoder: croma.CromaEncoder):
    stack = np.full((1, len(STACK_CHANNELS), 40, 40), np.nan, dtype=np.float32)
    stack[0, channel_index(Sensor.S1, "VV")] = -11.834 + 4.305  # mean + 1 std -> 0.75
    stack[0, channel_index(Sensor.S1, "VH")] = 10.0  # far above mean + 2 std -> clipped to 1
    for band in S2L1C_BANDS:
        stack[0, channel_index(Sensor.S2L1C, band)] = 50_000.0  # never read by CROMA
    dn = {band: 100.0 * (index + 1) for index, band in enumerate(S2L2A_BANDS)}
    for band, value in dn.items():
        if band != "B09":
            stack[0, channel_index(Sensor.S2L2A, band)] = value

    inputs = random_encoder.model_inputs(stack)
    sar, optical = inputs["x_sar"], inputs["x_optical"]
    assert sar.shape == (1, 2, SIZE_PX, SIZE_PX)
    assert optical.shape == (1, 12, SIZE_PX, SIZE_PX)
    assert torch.allclose(sar[0, 0], torch.tensor(0.75), atol=1e-6)
    assert torch.allclose(sar[0, 1], torch.tensor(1.0))
    for index, band in enumerate(S2L2A_BANDS):
        if band == "B09":
            expected = 0.5  # missing band: the band mean
        else:
            z = (dn[band] - croma.S2L2A_MEAN_DN[index]) / croma.S2L2A_STD_DN[index]
            expected = min(max((z + 2) / 4, 0.0), 1.0)
        assert torch.allclose(optical[0, index], torch.tensor(expected, dtype=torch.float32), atol=1e-6), band


def test_worldcereal_forward_fills_absent_seasons(random_encoder: croma.CromaEncoder, stack_a: np.ndarray):
    first = random_encoder.encode(stack_a, [True, False, True, False])
    second = random_encoder.encode(stack_a, [True, False, True, False])
    assert first.shape == (1, 4096)
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)
    block = first.reshape(1, 1024, 4)
    mean = (block[:, :, 0] + block[:, :, 2]) / 2
    assert np.allclose(block[:, :, 1], mean, atol=1e-6)
    assert np.allclose(block[:, :, 3], mean, atol=1e-6)
    assert random_encoder.settings() == {"input_size_px": SIZE_PX, "random_weights": True, "seed": 3}


def test_matches_torchgeo_model_called_directly(official_checkpoint: Path, stack_a: np.ndarray, weights_dir: Path):
    info = weights_entry(official_checkpoint, "https://example.invalid/" + official_checkpoint.name)
    store = WeightStore(reporter=LoggingReporter())
    store.import_local(info, official_checkpoint)
    encoder = croma.CromaEncoder(checkpoint=store.resolve(info), input_size_px=SIZE_PX)
    block = encoder.encode(stack_a, [False, True, False, False]).reshape(1, 1024, 4)
    del encoder

    reference = reference_model(official_checkpoint, SIZE_PX)
    season = stack_a[:, 1]
    l2a = [channel_index(Sensor.S2L2A, band) for band in S2L2A_BANDS]
    sar = torch.from_numpy(season[:, 0:2])
    optical = torch.from_numpy(season[:, l2a])
    sar = (sar - torch.tensor(croma.S1_MEAN_DB).view(1, 2, 1, 1)) / torch.tensor(croma.S1_STD_DB).view(1, 2, 1, 1)
    optical = (optical - torch.tensor(croma.S2L2A_MEAN_DN).view(1, 12, 1, 1)) / torch.tensor(
        croma.S2L2A_STD_DN
    ).view(1, 12, 1, 1)
    sar = ((torch.nan_to_num(sar, nan=0.0) + 2) / 4).clamp(0, 1)
    optical = ((torch.nan_to_num(optical, nan=0.0) + 2) / 4).clamp(0, 1)
    sar = torch.nn.functional.interpolate(sar, size=(SIZE_PX, SIZE_PX), mode="bilinear", antialias=True)
    optical = torch.nn.functional.interpolate(optical, size=(SIZE_PX, SIZE_PX), mode="bilinear", antialias=True)
    with torch.inference_mode():
        expected = reference(sar, optical)["joint_GAP"].numpy()
    assert np.abs(block[:, :, 1] - expected).max() <= 1e-5


def test_wrong_layout_lists_keys(random_encoder: croma.CromaEncoder, tmp_path: Path):
    state = croma.official_checkpoint_state(random_encoder.model)
    del state["s1_GAP_FFN"]
    state["optimizer"] = {"step": torch.tensor(1)}
    torch.save(state, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointKeyError) as caught:
        croma.CromaEncoder(checkpoint=tmp_path / "wrong.pt", input_size_px=SIZE_PX)
    message = str(caught.value)
    assert "missing keys: 6 (s1_GAP_FFN.0.bias, s1_GAP_FFN.0.weight" in message
    assert "unexpected keys: 1 (optimizer)" in message


@pytest.mark.slow
def test_download_through_algorithm_then_encode(
    processing, official_checkpoint: Path, random_encoder: croma.CromaEncoder, stack_a: np.ndarray,
    weights_dir: Path, monkeypatch: pytest.MonkeyPatch,
):
    with FileServer() as server:
        server.files["/" + official_checkpoint.name] = official_checkpoint
        server.drop_after["/" + official_checkpoint.name] = 1_000_000_000
        info = weights_entry(official_checkpoint, server.url("/" + official_checkpoint.name))
        monkeypatch.setattr(croma, "CARD", dataclasses.replace(croma.CARD, weights=info))
        result = processing.run("fusedeo:downloadweights", {"ENCODERS": ["croma"]})
        ranges = [header for _, header in server.requests]
    assert result["FILES"] == str(weights_dir / official_checkpoint.name)
    assert ranges == [None, "bytes=1000000000-"]

    encoder = create_encoder("croma", checkpoint=WeightStore().resolve(info), input_size_px=SIZE_PX)
    seasons = [False, False, False, True]
    assert np.array_equal(encoder.encode(stack_a, seasons), random_encoder.encode(stack_a, seasons))


@pytest.mark.slow
def test_worldcereal_forward_at_264_px(stack_a: np.ndarray):
    encoder = croma.CromaEncoder(random_weights=True, seed=5)
    assert encoder.input_size_px == 264
    first = encoder.encode(stack_a, [True, False, False, False])
    second = encoder.encode(stack_a, [True, False, False, False])
    assert first.shape == (1, 4096)
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)
    block = first.reshape(1, 1024, 4)
    assert np.array_equal(block[:, :, 0], block[:, :, 3])
