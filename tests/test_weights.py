"""Weight store: verified download with resume, import, offline errors, strict loading."""

import hashlib
import re
from pathlib import Path

import pytest
from stack_by_hand import FileServer, weights_entry

from fusedeo.errors import (
    CheckpointKeyError,
    ChecksumMismatchError,
    DownloadError,
    InputError,
    LicenceNotAcceptedError,
    MissingFileError,
    ModelFileError,
    RunCancelledError,
)
from fusedeo.models.encoders.base import WeightsInfo
from fusedeo.models.weights import (
    WEIGHTS_DIR_ENV,
    WeightStore,
    fetch_encoder_weights,
    known_weights,
    licence_requires_acceptance,
    load_checkpoint_strict,
)
from fusedeo.reporting import LoggingReporter

PAYLOAD_BYTES = 3 * (1 << 20) + 12345


class CancellingReporter(LoggingReporter):
    """Reporter that requests cancellation once progress passes ``stop_at`` percent."""

    def __init__(self, stop_at: float) -> None:
        super().__init__()
        self.stop_at = stop_at
        self.last_percent = 0.0

    def progress(self, percent: float) -> None:
        self.last_percent = percent

    def is_canceled(self) -> bool:
        return self.last_percent >= self.stop_at


@pytest.fixture()
def payload(tmp_path: Path) -> Path:
    """A file of pseudo-random bytes, larger than three download chunks."""
    source = tmp_path / "source"
    source.mkdir()
    path = source / "model-0123abcd.pt"
    data = hashlib.sha256(b"seed").digest() * (PAYLOAD_BYTES // 32 + 1)
    path.write_bytes(data[:PAYLOAD_BYTES])
    return path


@pytest.fixture()
def server(payload: Path):  # noqa: ANN201
    with FileServer() as file_server:
        file_server.files["/" + payload.name] = payload
        yield file_server


def store_for(folder: Path) -> tuple[WeightStore, LoggingReporter]:
    reporter = LoggingReporter()
    return WeightStore(reporter=reporter), reporter


def test_manifest_pins_croma_and_dofa():
    manifest = known_weights(["croma", "dofa"])
    assert set(manifest) == {"croma", "dofa"}
    for info in manifest.values():
        assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)
        assert re.search(r"/resolve/[0-9a-f]{40}/", info.url)
        # torchgeo's re-host names end in the first 8 hex digits of the sha256.
        assert info.file_name.rsplit("-", 1)[1].split(".")[0] == info.sha256[:8]
        assert info.size_bytes > 400_000_000
    assert manifest["croma"].licence == "MIT"
    assert manifest["dofa"].licence == "CC-BY-4.0"


def test_manifest_pins_copernicusfm_and_prithvi():
    manifest = known_weights(["copernicusfm", "prithvi"])
    for info in manifest.values():
        assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)
    # torchgeo re-hosts the same Copernicus-FM bytes under a name with the hash's first 8 digits.
    assert manifest["copernicusfm"].sha256.startswith("085350e4")
    assert manifest["copernicusfm"].size_bytes == 557_931_327
    assert manifest["prithvi"].size_bytes == 1_326_658_396
    assert re.search(r"/resolve/[0-9a-f]{40}/Prithvi_EO_V2_300M.pt$", manifest["prithvi"].url)


def test_environment_variable_overrides_folder(weights_dir: Path, tmp_path: Path):
    store = WeightStore(tmp_path / "plugin-default")
    assert store.folder == weights_dir


def test_no_folder_raises(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    with pytest.raises(InputError, match=f"set the environment variable {WEIGHTS_DIR_ENV}"):
        WeightStore()


def test_download_verifies_and_caches(weights_dir: Path, payload: Path, server: FileServer):
    info = weights_entry(payload, server.url("/" + payload.name))
    store, reporter = store_for(weights_dir)
    path = store.download(info)
    assert path == weights_dir / payload.name
    assert path.read_bytes() == payload.read_bytes()
    assert not (weights_dir / (payload.name + ".part")).exists()
    assert ("info", f"{payload.name} is published under the licence MIT.") in reporter.messages
    # A second call reuses the verified file without a request.
    requests = len(server.requests)
    assert store.download(info) == path
    assert len(server.requests) == requests


def test_download_resumes_after_dropped_connection(weights_dir: Path, payload: Path, server: FileServer):
    info = weights_entry(payload, server.url("/" + payload.name))
    dropped_at = 1_500_000
    server.drop_after["/" + payload.name] = dropped_at
    store, reporter = store_for(weights_dir)
    path = store.download(info)
    assert path.read_bytes() == payload.read_bytes()
    assert server.requests == [("/" + payload.name, None), ("/" + payload.name, f"bytes={dropped_at}-")]
    assert any("broke after 1,500,000 bytes" in text for _, text in reporter.messages)


def test_download_resumes_part_file_of_earlier_call(weights_dir: Path, payload: Path, server: FileServer):
    info = weights_entry(payload, server.url("/" + payload.name))
    (weights_dir / (payload.name + ".part")).write_bytes(payload.read_bytes()[:777_777])
    store, _ = store_for(weights_dir)
    assert store.download(info).read_bytes() == payload.read_bytes()
    assert server.requests == [("/" + payload.name, "bytes=777777-")]


def test_download_restarts_when_range_ignored(weights_dir: Path, payload: Path, server: FileServer):
    info = weights_entry(payload, server.url("/" + payload.name))
    (weights_dir / (payload.name + ".part")).write_bytes(b"x" * 1000)
    server.ignore_range = True
    store, reporter = store_for(weights_dir)
    assert store.download(info).read_bytes() == payload.read_bytes()
    assert any("does not support resuming" in text for _, text in reporter.messages)


def test_tampered_download_raises_and_leaves_nothing(weights_dir: Path, payload: Path, server: FileServer):
    info = weights_entry(payload, server.url("/" + payload.name))
    data = bytearray(payload.read_bytes())
    data[1000] ^= 0xFF
    payload.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    store, _ = store_for(weights_dir)
    with pytest.raises(ChecksumMismatchError, match=f"sha256 {actual}, but the manifest expects {info.sha256}"):
        store.download(info)
    assert list(weights_dir.iterdir()) == []


def test_truncated_file_on_server_raises(weights_dir: Path, payload: Path, server: FileServer):
    info = weights_entry(payload, server.url("/" + payload.name))
    payload.write_bytes(payload.read_bytes()[:1_000_000])
    store, _ = store_for(weights_dir)
    with pytest.raises(DownloadError, match="the server's file ends before byte 1,000,000, but the manifest expects"):
        store.download(info)
    # The bytes received so far stay for a later resume.
    assert (weights_dir / (payload.name + ".part")).stat().st_size == 1_000_000
    assert not (weights_dir / payload.name).exists()


def test_cancelled_download_keeps_part_file(weights_dir: Path, payload: Path, server: FileServer):
    info = weights_entry(payload, server.url("/" + payload.name))
    store = WeightStore(reporter=CancellingReporter(stop_at=50.0))
    with pytest.raises(RunCancelledError, match="is kept so that the next download resumes it"):
        store.download(info)
    part = weights_dir / (payload.name + ".part")
    assert 0 < part.stat().st_size < PAYLOAD_BYTES
    assert not (weights_dir / payload.name).exists()


def test_import_local_copies_verified_file(weights_dir: Path, payload: Path):
    info = weights_entry(payload, "https://example.invalid/" + payload.name)
    store, _ = store_for(weights_dir)
    path = store.import_local(info, payload)
    assert path == weights_dir / payload.name
    assert path.read_bytes() == payload.read_bytes()
    assert store.resolve(info) == path


def test_import_local_rejects_wrong_file(weights_dir: Path, payload: Path, tmp_path: Path):
    info = weights_entry(payload, "https://example.invalid/" + payload.name)
    other = tmp_path / "other.pt"
    other.write_bytes(payload.read_bytes()[:-1] + b"\x00")
    store, _ = store_for(weights_dir)
    with pytest.raises(ChecksumMismatchError, match=f"but the manifest expects {info.sha256}"):
        store.import_local(info, other)
    assert list(weights_dir.iterdir()) == []


def test_import_local_rejects_wrong_size(weights_dir: Path, payload: Path, tmp_path: Path):
    info = weights_entry(payload, "https://example.invalid/" + payload.name)
    short = tmp_path / "short.pt"
    short.write_bytes(b"abc")
    store, _ = store_for(weights_dir)
    with pytest.raises(ChecksumMismatchError, match=f"has 3 bytes, but the manifest expects {PAYLOAD_BYTES:,} bytes"):
        store.import_local(info, short)


def test_missing_file_offline_names_everything(weights_dir: Path):
    info = WeightsInfo(
        file_name="CROMA_large-921e69ad.pt",
        url="https://huggingface.co/torchgeo/croma/resolve/abc/CROMA_large-921e69ad.pt",
        sha256="921e69ad" + "0" * 56,
        size_bytes=2_690_426_614,
        licence="MIT",
    )
    store, _ = store_for(weights_dir)
    with pytest.raises(MissingFileError) as caught:
        store.resolve(info)
    message = str(caught.value)
    assert "CROMA_large-921e69ad.pt" in message
    assert "2,690,426,614 bytes (2.69 GB)" in message
    assert info.url in message
    assert str(weights_dir / "CROMA_large-921e69ad.pt") in message


def test_resolve_detects_file_changed_after_check(weights_dir: Path, payload: Path):
    info = weights_entry(payload, "https://example.invalid/" + payload.name)
    store, _ = store_for(weights_dir)
    path = store.import_local(info, payload)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="cached file"):
        store.resolve(info)


def test_prefix_hash_is_checked_and_reported(weights_dir: Path, payload: Path):
    full = weights_entry(payload, "https://example.invalid/" + payload.name)
    info = WeightsInfo(full.file_name, full.url, full.sha256[:8], full.size_bytes, full.licence)
    store, reporter = store_for(weights_dir)
    store.import_local(info, payload)
    assert any("only the first 8 hex digits" in text for kind, text in reporter.messages if kind == "warning")
    wrong = WeightsInfo(full.file_name, full.url, "00000000", full.size_bytes, full.licence)
    (weights_dir / payload.name).unlink()
    with pytest.raises(ChecksumMismatchError, match="expects a sha256 starting with 00000000"):
        store.import_local(wrong, payload)


def test_entry_without_size_imports_by_prefix(weights_dir: Path, payload: Path, server: FileServer):
    full = weights_entry(payload, server.url("/" + payload.name))
    info = WeightsInfo(full.file_name, full.url, full.sha256[:8], 0, full.licence)
    store, reporter = store_for(weights_dir)
    with pytest.raises(DownloadError, match=r"the manifest has no size for this checkpoint, so FusedEO does not "
                                            r"download it\. Download .* yourself and import it with "
                                            r"fusedeo:downloadweights \(SOURCE_FILE\)"):
        store.download(info)
    assert list(weights_dir.iterdir()) == []
    with pytest.raises(MissingFileError, match=r"\(size not published, licence"):
        store.resolve(info)

    path = store.import_local(info, payload)
    assert path.read_bytes() == payload.read_bytes()
    assert any("only the first 8 hex digits" in text for kind, text in reporter.messages if kind == "warning")
    assert store.resolve(info) == path
    assert store.download(info) == path

    wrong = WeightsInfo(full.file_name, full.url, "00000000", 0, full.licence)
    with pytest.raises(ChecksumMismatchError, match="expects a sha256 starting with 00000000"):
        store.resolve(wrong)


def test_scalemae_entry_checks_published_prefix():
    from fusedeo.models.encoders import scalemae

    info = scalemae.CARD.weights
    assert info.sha256 == "98ed9821"
    assert info.file_name.endswith(f"-{info.sha256}.pth")
    assert licence_requires_acceptance(info)


def test_scalemae_import_needs_licence_and_matching_file(processing, weights_dir: Path, tmp_path: Path):
    from qgis.core import QgsProcessingException

    source = tmp_path / "scalemae.pth"
    source.write_bytes(b"not the published checkpoint")
    parameters = {"ENCODERS": ["scalemae"], "SOURCE_FILE": str(source)}
    with pytest.raises(QgsProcessingException, match=r"ACCEPT_LICENCE: the scalemae weights are licensed CC-BY-NC-4.0"):
        processing.run("fusedeo:downloadweights", parameters)
    with pytest.raises(QgsProcessingException, match=r"manifest expects a sha256 starting with 98ed9821"):
        processing.run("fusedeo:downloadweights", {**parameters, "ACCEPT_LICENCE": True})
    assert list(weights_dir.iterdir()) == []
    with pytest.raises(QgsProcessingException, match=r"import it with fusedeo:downloadweights \(SOURCE_FILE, with "
                                                     r"ACCEPT_LICENCE\)"):
        processing.run("fusedeo:downloadweights", {"ENCODERS": ["scalemae"], "ACCEPT_LICENCE": True})


def test_non_commercial_licence_needs_acceptance(weights_dir: Path, payload: Path, server: FileServer):
    info = weights_entry(payload, server.url("/" + payload.name), licence="CC-BY-NC-4.0")
    store, reporter = store_for(weights_dir)
    with pytest.raises(LicenceNotAcceptedError, match="set ACCEPT_LICENCE to True"):
        store.download(info)
    assert server.requests == []
    assert store.download(info, accept_licence=True).is_file()
    assert any("non-commercial purposes only" in text for _, text in reporter.messages)


def test_fetch_rejects_file_for_two_encoders(weights_dir: Path, payload: Path):
    with pytest.raises(InputError, match="SOURCE_FILE: a local file can be imported for one encoder"):
        fetch_encoder_weights(["croma", "dofa"], None, LoggingReporter(), source_file=payload)


def test_fetch_rejects_wrong_file_for_dofa(weights_dir: Path, payload: Path):
    with pytest.raises(ChecksumMismatchError, match="dofa_base_patch16_224-a0275954.pth"):
        fetch_encoder_weights(["dofa"], None, LoggingReporter(), source_file=payload)


class TestStrictLoading:
    """load_checkpoint_strict on a small torch module."""

    @staticmethod
    def model():  # noqa: ANN205
        import torch

        return torch.nn.Sequential(*[torch.nn.Linear(3, 3) for _ in range(12)])

    def test_exact_checkpoint_loads(self, tmp_path: Path):
        import torch

        source = self.model()
        torch.save(source.state_dict(), tmp_path / "ok.pt")
        target = self.model()
        load_checkpoint_strict(target, tmp_path / "ok.pt", dict)
        for key, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], value)

    def test_missing_and_unexpected_keys_listed(self, tmp_path: Path):
        import torch

        state = self.model().state_dict()
        renamed = {f"encoder.{key}": value for key, value in state.items()}
        torch.save(renamed, tmp_path / "prefixed.pt")
        with pytest.raises(CheckpointKeyError) as caught:
            load_checkpoint_strict(self.model(), tmp_path / "prefixed.pt", dict)
        message = str(caught.value)
        assert "missing keys: 24 (0.bias, 0.weight, 1.bias" in message
        assert "unexpected keys: 24 (encoder.0.bias, encoder.0.weight" in message
        assert "and 14 more" in message

    def test_key_filter_is_applied(self, tmp_path: Path):
        import torch

        state = self.model().state_dict()
        torch.save({"model": {f"encoder.{k}": v for k, v in state.items()}}, tmp_path / "nested.pt")

        def strip(checkpoint):  # noqa: ANN001, ANN202
            return {key.removeprefix("encoder."): value for key, value in checkpoint["model"].items()}

        target = self.model()
        load_checkpoint_strict(target, tmp_path / "nested.pt", strip)
        assert torch.equal(target.state_dict()["11.weight"], state["11.weight"])

    def test_shape_mismatch_listed(self, tmp_path: Path):
        import torch

        state = self.model().state_dict()
        state["5.weight"] = torch.zeros(4, 3)
        torch.save(state, tmp_path / "shape.pt")
        with pytest.raises(CheckpointKeyError, match=r"shape mismatches \(checkpoint != model\): 1 \(5.weight \(4, 3\) != \(3, 3\)\)"):
            load_checkpoint_strict(self.model(), tmp_path / "shape.pt", dict)

    def test_own_state_fills_computed_keys(self, tmp_path: Path):
        import torch

        state = self.model().state_dict()
        computed = state.pop("0.bias")
        torch.save(state, tmp_path / "partial.pt")
        target = self.model()
        load_checkpoint_strict(target, tmp_path / "partial.pt", dict, own_state={"0.bias": computed})
        assert torch.equal(target.state_dict()["0.bias"], computed)
        state["0.bias"] = computed
        torch.save(state, tmp_path / "full.pt")
        with pytest.raises(CheckpointKeyError, match="keys the model computes itself: 1 \\(0.bias\\)"):
            load_checkpoint_strict(self.model(), tmp_path / "full.pt", dict, own_state={"0.bias": computed})

    def test_pickled_objects_are_rejected(self, tmp_path: Path):
        import torch

        torch.save({"weight": torch.zeros(1), "path": Path("/tmp")}, tmp_path / "pickle.pt")
        with pytest.raises(ModelFileError, match="could not be read as a weights-only torch file"):
            load_checkpoint_strict(self.model(), tmp_path / "pickle.pt", dict)


def test_algorithm_rejects_file_with_two_encoders(processing, weights_dir: Path, payload: Path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="one encoder at a time"):
        processing.run(
            "fusedeo:downloadweights",
            {"ENCODERS": ["croma", "dofa"], "SOURCE_FILE": str(payload), "ACCEPT_LICENCE": False},
        )


def test_algorithm_reports_wrong_source_file(processing, weights_dir: Path, payload: Path):
    from qgis.core import QgsProcessingException

    with pytest.raises(QgsProcessingException, match="but the manifest expects 2,690,426,614 bytes"):
        processing.run("fusedeo:downloadweights", {"ENCODERS": ["croma"], "SOURCE_FILE": str(payload)})
    assert list(weights_dir.iterdir()) == []


def test_manifest_imports_without_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from fusedeo.models.weights import known_weights\n"
        "known_weights(['croma', 'dofa'])\n"
        "bad = [name for name in sys.modules if name.startswith(('qgis', 'torch', 'onnxruntime'))]\n"
        "print(','.join(bad))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == ""


def test_algorithm_requires_licence_acceptance(
    processing, weights_dir: Path, payload: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
):
    import dataclasses

    from qgis.core import QgsProcessingException

    from fusedeo.models.encoders import dofa

    info = weights_entry(payload, server.url("/" + payload.name), licence="CC-BY-NC-4.0")
    monkeypatch.setattr(dofa, "CARD", dataclasses.replace(dofa.CARD, weights=info))
    with pytest.raises(QgsProcessingException, match="ACCEPT_LICENCE: the dofa weights are licensed CC-BY-NC-4.0"):
        processing.run("fusedeo:downloadweights", {"ENCODERS": ["dofa"]})
    assert server.requests == []

    result = processing.run("fusedeo:downloadweights", {"ENCODERS": ["dofa"], "ACCEPT_LICENCE": True})
    assert result["FILES"] == str(weights_dir / payload.name)
    assert (weights_dir / payload.name).read_bytes() == payload.read_bytes()


def test_entry_without_hash_is_never_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import dataclasses

    from fusedeo.errors import ChecksumMismatchError
    from fusedeo.models.encoders import copernicusfm
    from fusedeo.models.weights import WeightStore

    monkeypatch.delenv(WEIGHTS_DIR_ENV, raising=False)
    info = dataclasses.replace(copernicusfm.CARD.weights, sha256="", size_bytes=12)
    (tmp_path / info.file_name).write_bytes(b"twelve bytes")
    store = WeightStore(tmp_path)
    with pytest.raises(ChecksumMismatchError, match="the manifest has no verified sha256 for this checkpoint"):
        store.resolve(info)
    with pytest.raises(ChecksumMismatchError, match="the manifest has no verified sha256 for this checkpoint"):
        store.download(info)


def test_plugin_setting_sets_store_folder(qgis_app, tmp_path: Path):
    from qgis.core import QgsSettings

    from fusedeo.plugin.algorithms.downloadweights import WEIGHTS_DIR_SETTING, default_weights_dir

    settings = QgsSettings()
    settings.setValue(WEIGHTS_DIR_SETTING, str(tmp_path / "store"))
    try:
        assert default_weights_dir() == tmp_path / "store"
    finally:
        settings.remove(WEIGHTS_DIR_SETTING)
    assert default_weights_dir().parts[-2:] == ("fusedeo", "weights")
