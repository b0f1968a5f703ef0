"""DOFA encoder: checkpoint loading through the store, band routing, torchgeo parity."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from conftest import LOCATION_A, LOCATION_B
from stack_by_hand import FileServer, weights_entry, worldcereal_stack

from fusedeo.errors import CheckpointKeyError, InputError
from fusedeo.models.encoders import create_encoder, dofa
from fusedeo.models.weights import WeightStore
from fusedeo.raster.bands import S2L1C_BANDS, S2L2A_BANDS, STACK_CHANNELS, Sensor, channel_index
from fusedeo.reporting import LoggingReporter

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def random_encoder() -> dofa.DofaEncoder:
    """Full-size DOFA-Base with seeded random weights."""
    return dofa.DofaEncoder(random_weights=True, seed=7)


@pytest.fixture(scope="module")
def official_checkpoint(random_encoder: dofa.DofaEncoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random encoder's weights saved in the published checkpoint's layout."""
    path = tmp_path_factory.mktemp("dofa") / "dofa_base_patch16_224-test.pth"
    torch.save(dofa.official_checkpoint_state(random_encoder.model), path)
    return path


@pytest.fixture(scope="module")
def stacks() -> np.ndarray:
    """Both WorldCereal locations, ``(2, 4, 27, 64, 64)``."""
    return np.concatenate([worldcereal_stack(LOCATION_A), worldcereal_stack(LOCATION_B)])


def constant_stack(values: dict[tuple[Sensor, str], float], size_px: int = 32) -> np.ndarray:
    """Return a ``(1, 1, 27, size, size)`` stack with constant channels (NaN elsewhere)."""
    stack = np.full((1, 1, len(STACK_CHANNELS), size_px, size_px), np.nan, dtype=np.float32)
    for (sensor, band), value in values.items():
        stack[0, 0, channel_index(sensor, band)] = value
    return stack


def test_card_and_block(random_encoder: dofa.DofaEncoder):
    assert dofa.CARD.name == "dofa"
    assert dofa.CARD.input_size_px == 224
    assert dofa.CARD.s2_offset_expected is True
    block = random_encoder.block()
    assert (block.name, block.channels, block.seasons, block.width) == ("dofa", 1536, 4, 6144)


def test_missing_checkpoint_raises():
    with pytest.raises(InputError, match="dofa: no checkpoint given. FusedEO never runs DOFA on unverified weights"):
        dofa.DofaEncoder()


def test_official_layout_has_no_fc_norm(random_encoder: dofa.DofaEncoder):
    state = dofa.official_checkpoint_state(random_encoder.model)
    assert "fc_norm.weight" not in state
    assert "patch_embed.weight_generator.weight_tokens" in state
    assert "pos_embed" in state
    assert len(state) == len(random_encoder.model.state_dict()) - 2


def test_routing_s1_and_l2a_fallback():
    values = {(Sensor.S1, "VV"): -10.0, (Sensor.S1, "VH"): -17.0}
    for index, band in enumerate(S2L2A_BANDS):
        values[(Sensor.S2L2A, band)] = 500.0 + 100.0 * index
    values.pop((Sensor.S2L2A, "B09"))
    stack = constant_stack(values)
    encoder = dofa.DofaEncoder(random_weights=True)
    reporter = LoggingReporter()
    encoder.prepare({Sensor.S1, Sensor.S2L2A}, reporter)
    assert encoder.s2_product == "s2l2a"
    assert any("No L1C layer was given" in text for kind, text in reporter.messages if kind == "warning")

    inputs = encoder.model_inputs(stack[:, 0])
    s1, s1_wavelengths = inputs["s1"]
    s2, s2_wavelengths = inputs["s2"]
    assert s1.shape == (1, 2, 224, 224)
    assert s1_wavelengths == [5.405, 5.405]
    assert torch.allclose(s1[0, 0], torch.tensor((-10.0 + 12.577) / 5.179), atol=1e-6)
    assert torch.allclose(s1[0, 1], torch.tensor((-17.0 + 20.265) / 5.872), atol=1e-6)
    assert s2.shape == (1, 12, 224, 224)
    assert s2_wavelengths == [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.61, 2.19]
    for index, band in enumerate(S2L2A_BANDS):
        if band == "B09":
            expected = 0.0
        else:
            expected = (500.0 + 100.0 * index + 1000.0 - dofa.S2L2A_MEAN_DN[index]) / dofa.S2L2A_STD_DN[index]
        assert torch.allclose(s2[0, index], torch.tensor(expected, dtype=torch.float32), atol=1e-5), band


def test_routing_prefers_l1c():
    values = {(Sensor.S1, "VV"): -10.0, (Sensor.S1, "VH"): -17.0}
    for index, band in enumerate(S2L1C_BANDS):
        values[(Sensor.S2L1C, band)] = 1000.0 + 10.0 * index
    for band in S2L2A_BANDS:
        values[(Sensor.S2L2A, band)] = 99999.0
    stack = constant_stack(values, size_px=224)
    encoder = dofa.DofaEncoder(random_weights=True)
    encoder.prepare({Sensor.S1, Sensor.S2L1C, Sensor.S2L2A}, LoggingReporter())
    assert encoder.s2_product == "s2l1c"
    s2, wavelengths = encoder.model_inputs(stack[:, 0])["s2"]
    assert s2.shape == (1, 13, 224, 224)
    assert wavelengths[10] == 1.375
    for index in range(13):
        expected = (1000.0 + 10.0 * index + 1000.0 - dofa.S2L1C_MEAN_DN[index]) / dofa.S2L1C_STD_DN[index]
        assert torch.allclose(s2[0, index], torch.tensor(expected, dtype=torch.float32), atol=1e-5)


def test_missing_s1_raises(random_encoder: dofa.DofaEncoder):
    with pytest.raises(InputError, match=r"dofa: the encoder needs Sentinel-1 and Sentinel-2 layers, but no Sentinel-1 \(VV, VH\)"):
        random_encoder.prepare({Sensor.S2L2A}, LoggingReporter())


def test_worldcereal_forward_deterministic(random_encoder: dofa.DofaEncoder, stacks: np.ndarray):
    first = random_encoder.encode(stacks, [True] * 4)
    second = random_encoder.encode(stacks, [True] * 4)
    assert first.shape == (2, 6144)
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)
    assert random_encoder.settings() == {"s2_product": "s2l2a", "random_weights": True, "seed": 7}


def test_absent_seasons_get_mean_of_present(random_encoder: dofa.DofaEncoder, stacks: np.ndarray):
    block = random_encoder.encode(stacks[:1], [True, False, True, False]).reshape(1, 1536, 4)
    mean = (block[:, :, 0] + block[:, :, 2]) / 2
    assert np.allclose(block[:, :, 1], mean, atol=1e-6)
    assert np.allclose(block[:, :, 3], mean, atol=1e-6)
    assert not np.allclose(block[:, :, 0], block[:, :, 2])


def test_matches_torchgeo_model_called_directly(official_checkpoint: Path, stacks: np.ndarray, weights_dir: Path):
    from torchgeo.models import dofa_base_patch16_224

    info = weights_entry(official_checkpoint, "https://example.invalid/" + official_checkpoint.name, "CC-BY-4.0")
    store = WeightStore(reporter=LoggingReporter())
    path = store.import_local(info, official_checkpoint)
    encoder = dofa.DofaEncoder(checkpoint=store.resolve(info))
    block = encoder.encode(stacks, [True] * 4).reshape(2, 1536, 4)
    assert path.parent == weights_dir

    reference = dofa_base_patch16_224(weights=None, num_classes=0).eval()
    missing, unexpected = reference.load_state_dict(torch.load(official_checkpoint, weights_only=True), strict=False)
    assert sorted(missing) == ["fc_norm.bias", "fc_norm.weight"]
    assert unexpected == []
    l2a = [channel_index(Sensor.S2L2A, band) for band in S2L2A_BANDS]
    s1_mean = torch.tensor(dofa.S1_MEAN_DB).view(1, 2, 1, 1)
    s1_std = torch.tensor(dofa.S1_STD_DB).view(1, 2, 1, 1)
    s2_mean = torch.tensor(dofa.S2L2A_MEAN_DN).view(1, 12, 1, 1)
    s2_std = torch.tensor(dofa.S2L2A_STD_DN).view(1, 12, 1, 1)
    wavelengths = [0.443, 0.49, 0.56, 0.665, 0.705, 0.74, 0.783, 0.842, 0.865, 0.945, 1.61, 2.19]
    with torch.inference_mode():
        for season in range(4):
            s1 = torch.from_numpy(stacks[:, season, 0:2])
            s2 = torch.from_numpy(stacks[:, season, l2a])
            s1 = torch.nan_to_num((s1 - s1_mean) / s1_std, nan=0.0)
            s2 = torch.nan_to_num((s2 + 1000.0 - s2_mean) / s2_std, nan=0.0)
            s1 = torch.nn.functional.interpolate(s1, size=(224, 224), mode="bilinear", antialias=True)
            s2 = torch.nn.functional.interpolate(s2, size=(224, 224), mode="bilinear", antialias=True)
            expected = torch.cat(
                [reference.forward_features(s1, [5.405, 5.405]), reference.forward_features(s2, wavelengths)], dim=1
            ).numpy()
            assert np.abs(block[:, :, season] - expected).max() <= 1e-5


def test_download_through_algorithm_then_encode(
    processing, official_checkpoint: Path, random_encoder: dofa.DofaEncoder, stacks: np.ndarray,
    weights_dir: Path, monkeypatch: pytest.MonkeyPatch,
):
    with FileServer() as server:
        server.files["/" + official_checkpoint.name] = official_checkpoint
        server.drop_after["/" + official_checkpoint.name] = 100_000_000
        info = weights_entry(official_checkpoint, server.url("/" + official_checkpoint.name), "CC-BY-4.0")
        monkeypatch.setattr(dofa, "CARD", dataclasses.replace(dofa.CARD, weights=info))
        result = processing.run("fusedeo:downloadweights", {"ENCODERS": ["dofa"]})
        ranges = [header for _, header in server.requests]
    assert result["OUTPUT_FOLDER"] == str(weights_dir)
    assert result["FILES"] == str(weights_dir / official_checkpoint.name)
    assert ranges == [None, "bytes=100000000-"]

    encoder = create_encoder("dofa", checkpoint=WeightStore().resolve(info))
    assert np.array_equal(encoder.encode(stacks[:1], [True] * 4), random_encoder.encode(stacks[:1], [True] * 4))


def test_tampered_key_layout_lists_keys(random_encoder: dofa.DofaEncoder, tmp_path: Path):
    state = dofa.official_checkpoint_state(random_encoder.model)
    state.pop("cls_token")
    state["norm.weight"] = torch.ones(768)
    state["norm.bias"] = torch.zeros(768)
    torch.save(state, tmp_path / "other-layout.pth")
    with pytest.raises(CheckpointKeyError, match=r"missing keys: 1 \(cls_token\); unexpected keys: 2 \(norm.bias, norm.weight\)"):
        dofa.DofaEncoder(checkpoint=tmp_path / "other-layout.pth")
