"""Weight store: a verified cache of foundation-model checkpoints.

Checkpoints live in one folder, the cache. ``FUSEDEO_WEIGHTS_DIR`` overrides
the folder that the caller passes (the plugin passes
``<QGIS settings dir>/fusedeo/weights``). A file enters the cache only after
its size and sha256 match the manifest entry (:class:`WeightsInfo`), whether
it was downloaded or imported from a local copy, and :meth:`WeightStore.resolve`
checks it again before a model uses it. Nothing here imports QGIS, and torch
is imported only by :func:`load_checkpoint_strict`.

Downloads go to ``<file name>.part`` and resume with an HTTP Range request,
both after a dropped connection within one call and across calls.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import (
    CheckpointKeyError,
    ChecksumMismatchError,
    DownloadError,
    InputError,
    LicenceNotAcceptedError,
    MissingFileError,
    ModelFileError,
    RunCancelledError,
    import_optional,
)
from ..reporting import LoggingReporter, Reporter
from .encoders.base import WeightsInfo

logger = logging.getLogger(__name__)

WEIGHTS_DIR_ENV = "FUSEDEO_WEIGHTS_DIR"
"""Environment variable that overrides the cache folder (servers, tests)."""

NON_COMMERCIAL_LICENCES: frozenset[str] = frozenset({"CC-BY-NC-4.0"})
"""Licences that need an explicit acceptance before a download or import."""

FULL_SHA256_LENGTH = 64
CHUNK_BYTES = 1 << 20
DOWNLOAD_ATTEMPTS = 4
TIMEOUT_S = 60.0
KEY_LIST_LIMIT = 10


def known_weights(encoder_names: list[str] | None = None) -> dict[str, WeightsInfo]:
    """Return the manifest: the checkpoint of every encoder that has one.

    The entries come from the encoders' model cards, so the card stays the
    single place that records a checkpoint's URL, sha256, size and licence.

    Args:
        encoder_names: Encoders to include (default: all registered ones).

    Returns:
        Encoder name -> checkpoint, in fused-block order; training-free
        encoders (no weights) are left out.
    """
    from .encoders import ENCODER_NAMES, encoder_card

    manifest: dict[str, WeightsInfo] = {}
    for name in encoder_names if encoder_names is not None else list(ENCODER_NAMES):
        card = encoder_card(name)
        if card.weights is not None:
            manifest[name] = card.weights
    return manifest


def sha256_of_file(path: Path, reporter: Reporter | None = None) -> str:
    """Return the hex sha256 of ``path``, checking for cancellation per chunk.

    Raises:
        RunCancelledError: If the reporter requests cancellation.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
            if reporter is not None and reporter.is_canceled():
                raise RunCancelledError(f"Checking the sha256 of {path} was cancelled.")
    return digest.hexdigest()


def licence_requires_acceptance(info: WeightsInfo) -> bool:
    """Return whether ``info``'s licence must be accepted explicitly.

    The licence text starts with its SPDX identifier and may go on with a
    note, as in ``"CC-BY-NC-4.0 (non-commercial use only)"``.
    """
    identifier = info.licence.split(maxsplit=1)[0] if info.licence.strip() else ""
    return identifier in NON_COMMERCIAL_LICENCES


def check_licence_accepted(info: WeightsInfo, accept_licence: bool) -> None:
    """Raise unless ``info``'s licence needs no acceptance or was accepted.

    Raises:
        LicenceNotAcceptedError: If the licence is non-commercial and
            ``accept_licence`` is False.
    """
    if licence_requires_acceptance(info) and not accept_licence:
        raise LicenceNotAcceptedError(
            f"ACCEPT_LICENCE: {info.file_name} is licensed {info.licence} "
            "(non-commercial use only). Read the licence, then accept it explicitly: "
            "set ACCEPT_LICENCE to True in fusedeo:downloadweights, or pass "
            "accept_licence=True."
        )


def _format_size(size_bytes: int) -> str:
    """Return ``size_bytes`` as bytes plus a rounded MB/GB figure; 0 means the size is not published."""
    if size_bytes <= 0:
        return "size not published"
    if size_bytes >= 1_000_000_000:
        return f"{size_bytes:,} bytes ({size_bytes / 1e9:.2f} GB)"
    return f"{size_bytes:,} bytes ({size_bytes / 1e6:.1f} MB)"


MIN_HASH_PREFIX_LENGTH = 8


def _expected_hash(expected: str) -> str:
    """Describe the manifest's hash: the full sha256, or the published prefix."""
    return expected if len(expected) == FULL_SHA256_LENGTH else f"a sha256 starting with {expected}"


def require_known_hash(info: WeightsInfo) -> None:
    """Reject a manifest entry without a usable sha256, so that no file passes unverified.

    Raises:
        ChecksumMismatchError: If the entry has fewer than 8 hex digits of sha256.
    """
    if len(info.sha256) < MIN_HASH_PREFIX_LENGTH:
        raise ChecksumMismatchError(
            f"{info.file_name}: the manifest has no verified sha256 for this checkpoint yet, so "
            "FusedEO cannot verify the file and does not use it. Choose an encoder whose checkpoint "
            "is verified, or update FusedEO once the hash is published."
        )


class WeightStore:
    """A cache folder of checkpoints, each verified against its manifest entry.

    Args:
        default_dir: Folder used when ``FUSEDEO_WEIGHTS_DIR`` is not set.
        reporter: Receives licences, progress and decisions; polled for
            cancellation during downloads and hashing.
    """

    def __init__(self, default_dir: Path | str | None = None, reporter: Reporter | None = None) -> None:
        """Create a store; the folder is created on the first write."""
        override = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
        if override:
            self.folder = Path(override).expanduser()
        elif default_dir is not None:
            self.folder = Path(default_dir).expanduser()
        else:
            raise InputError(
                f"No weight cache folder: set the environment variable {WEIGHTS_DIR_ENV} "
                "to a writable folder, or pass the folder to WeightStore."
            )
        self.reporter: Reporter = reporter if reporter is not None else LoggingReporter(__name__)

    def path_for(self, info: WeightsInfo) -> Path:
        """Return the cache path where ``info``'s file is kept."""
        return self.folder / info.file_name

    # -- verification -----------------------------------------------------

    def _verify(self, info: WeightsInfo, path: Path, source: str) -> str:
        """Check the size and sha256 of ``path`` against ``info``.

        Args:
            info: The manifest entry.
            path: The file to check.
            source: What the file is, for the message (``"downloaded file"``).

        Returns:
            The file's full sha256.

        Raises:
            ChecksumMismatchError: If the size or the hash differs.
        """
        require_known_hash(info)
        size = path.stat().st_size
        if info.size_bytes > 0 and size != info.size_bytes:
            raise ChecksumMismatchError(
                f"The {source} {path} for {info.file_name} has {size:,} bytes, but the "
                f"manifest expects {info.size_bytes:,} bytes. The file is truncated or is "
                f"a different file. Download it again from {info.url}."
            )
        self.reporter.info(f"Checking the sha256 of {path.name} ({_format_size(size)}).")
        actual = sha256_of_file(path, self.reporter)
        expected = info.sha256.lower()
        # NOTE: an entry whose publisher states only a hash prefix (for example
        # the 8 hex digits in a re-host's file name) can check only that prefix.
        matches = actual == expected if len(expected) == FULL_SHA256_LENGTH else actual.startswith(expected)
        if not matches:
            raise ChecksumMismatchError(
                f"The {source} {path} for {info.file_name} has sha256 {actual}, but the "
                f"manifest expects {_expected_hash(expected)}. The file is damaged or is not the published "
                f"checkpoint. Download it again from {info.url}."
            )
        if len(expected) < FULL_SHA256_LENGTH:
            self.reporter.warning(
                f"{info.file_name}: only the first {len(expected)} hex digits of its sha256 are "
                f"published, so only that prefix was checked (full hash {actual})."
            )
        return actual

    def _stamp_path(self, info: WeightsInfo) -> Path:
        return self.folder / f"{info.file_name}.verified.json"

    def _write_stamp(self, info: WeightsInfo, path: Path, sha256: str) -> None:
        """Record that ``path`` was verified, keyed by its size and mtime."""
        stat = path.stat()
        stamp = {"sha256": sha256, "size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        self._stamp_path(info).write_text(json.dumps(stamp), encoding="utf-8")

    def _stamp_is_current(self, info: WeightsInfo, path: Path) -> bool:
        """Return whether a stamp shows ``path`` verified and unchanged since."""
        stamp_path = self._stamp_path(info)
        if not stamp_path.is_file():
            return False
        try:
            stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        stat = path.stat()
        expected = info.sha256.lower()
        return (
            stamp.get("size_bytes") == stat.st_size
            and info.size_bytes in (0, stat.st_size)
            and stamp.get("mtime_ns") == stat.st_mtime_ns
            and str(stamp.get("sha256", "")).startswith(expected)
        )

    # -- public API ---------------------------------------------------------

    def resolve(self, info: WeightsInfo) -> Path:
        """Return the verified local path of ``info``'s checkpoint, without downloading.

        A file verified before and unchanged since (same size and modification
        time) is not hashed again.

        Raises:
            MissingFileError: If the file is not in the cache.
            ChecksumMismatchError: If the cached file fails verification.
        """
        require_known_hash(info)
        path = self.path_for(info)
        if not path.is_file():
            raise MissingFileError(
                f"The checkpoint {info.file_name} ({_format_size(info.size_bytes)}, licence "
                f"{info.licence}) is not in the weight cache. Run fusedeo:downloadweights, or "
                f"download {info.url} yourself and import it with fusedeo:downloadweights "
                f"(SOURCE_FILE) or place it at {path}."
            )
        if self._stamp_is_current(info, path):
            return path
        sha256 = self._verify(info, path, "cached file")
        self._write_stamp(info, path, sha256)
        return path

    def is_cached(self, info: WeightsInfo) -> bool:
        """Return whether ``info``'s file is in the cache (not verified)."""
        return self.path_for(info).is_file()

    def show_licence(self, info: WeightsInfo, accept_licence: bool) -> None:
        """Report ``info``'s licence, and check acceptance where it is needed.

        Raises:
            LicenceNotAcceptedError: If the licence needs explicit acceptance
                and ``accept_licence`` is False.
        """
        self.reporter.info(f"{info.file_name} is published under the licence {info.licence}.")
        check_licence_accepted(info, accept_licence)
        if licence_requires_acceptance(info):
            self.reporter.warning(
                f"The {info.licence} licence of {info.file_name} was accepted: "
                "its weights may be used for non-commercial purposes only."
            )

    def import_local(self, info: WeightsInfo, source: Path | str, accept_licence: bool = False) -> Path:
        """Copy a local file into the cache after checking its size and sha256.

        Args:
            info: The manifest entry the file must match.
            source: The local file, for example a manual download.
            accept_licence: Whether the user accepted a licence that needs it.

        Returns:
            The verified path in the cache.

        Raises:
            MissingFileError: If ``source`` does not exist.
            ChecksumMismatchError: If ``source`` does not match ``info``;
                nothing is copied.
            LicenceNotAcceptedError: See :meth:`show_licence`.
        """
        source = Path(source).expanduser()
        self.show_licence(info, accept_licence)
        if not source.is_file():
            raise MissingFileError(f"SOURCE_FILE: {source} does not exist or is not a file.")
        sha256 = self._verify(info, source, "source file")
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path_for(info)
        if source.resolve() == target.resolve():
            self._write_stamp(info, target, sha256)
            return target
        part = target.with_name(target.name + ".import")
        try:
            shutil.copyfile(source, part)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
        self._write_stamp(info, target, sha256)
        self.reporter.info(f"Imported {source} as {target} (sha256 {sha256}).")
        return target

    def download(self, info: WeightsInfo, accept_licence: bool = False) -> Path:
        """Download ``info``'s checkpoint into the cache, or reuse a verified copy.

        Bytes go to ``<file name>.part``. A dropped connection is retried with
        an HTTP Range request from the bytes already received, and a part file
        left by an earlier call is resumed the same way. The finished file is
        verified before it replaces anything: a size or sha256 mismatch deletes
        the part file and raises.

        Args:
            info: The manifest entry to fetch.
            accept_licence: Whether the user accepted a licence that needs it.

        Returns:
            The verified path in the cache.

        Raises:
            LicenceNotAcceptedError: See :meth:`show_licence`.
            DownloadError: If the server cannot be reached or misbehaves.
            ChecksumMismatchError: If the downloaded file does not match.
            RunCancelledError: If the reporter requests cancellation; the part file
                stays in the cache so that the next call resumes it.
        """
        require_known_hash(info)
        self.show_licence(info, accept_licence)
        target = self.path_for(info)
        if target.is_file():
            try:
                return self.resolve(info)
            except ChecksumMismatchError as err:
                if info.size_bytes <= 0:
                    raise
                self.reporter.warning(f"{err} Downloading it again.")
                target.unlink()
        if info.size_bytes <= 0:
            # Resuming and the truncation check need the size; the hash check alone still works on an import.
            raise DownloadError(
                f"{info.file_name}: the manifest has no size for this checkpoint, so FusedEO does not download "
                f"it. Download {info.url} yourself and import it with fusedeo:downloadweights (SOURCE_FILE"
                + (", with ACCEPT_LICENCE" if licence_requires_acceptance(info) else "")
                + f"); the file is checked against its published sha256 prefix {info.sha256}."
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        self.reporter.info(f"Downloading {info.url} ({_format_size(info.size_bytes)}) to {target}.")
        started = time.monotonic()
        self._fetch_with_resume(info, part)
        self.reporter.debug(f"Downloaded {info.file_name} in {time.monotonic() - started:.1f} s.")
        try:
            sha256 = self._verify(info, part, "downloaded file")
        except ChecksumMismatchError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
        self._write_stamp(info, target, sha256)
        self.reporter.info(f"Verified {target} (sha256 {sha256}).")
        return target

    # -- HTTP ---------------------------------------------------------------

    def _fetch_with_resume(self, info: WeightsInfo, part: Path) -> None:
        """Fill ``part`` with the whole file, resuming after dropped connections."""
        last_error: Exception | None = None
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            offset = part.stat().st_size if part.is_file() else 0
            if offset > info.size_bytes:
                self.reporter.warning(
                    f"{part} is larger than the expected {info.size_bytes:,} bytes; starting over."
                )
                part.unlink()
                offset = 0
            if offset == info.size_bytes:
                return
            if offset:
                self.reporter.info(f"Resuming {info.file_name} at byte {offset:,}.")
            try:
                self._fetch_once(info, part, offset)
            except urllib.error.HTTPError as err:
                if err.code == 416:
                    raise DownloadError(
                        f"Downloading {info.url}: the server's file ends before byte {offset:,}, "
                        f"but the manifest expects {info.size_bytes:,} bytes. The URL serves a "
                        f"different or truncated file; {part} keeps the bytes received."
                    ) from err
                raise DownloadError(
                    f"Downloading {info.url} failed with HTTP {err.code} {err.reason}. "
                    "Check the URL and your connection, or download the file yourself and "
                    "import it with SOURCE_FILE."
                ) from err
            except (http.client.HTTPException, ConnectionError, TimeoutError, urllib.error.URLError) as err:
                last_error = err
            else:
                if part.stat().st_size >= info.size_bytes:
                    return
                last_error = DownloadError("the server closed the connection early")
            received = part.stat().st_size if part.is_file() else 0
            self.reporter.warning(
                f"The connection for {info.file_name} broke after {received:,} bytes "
                f"({last_error}); attempt {attempt} of {DOWNLOAD_ATTEMPTS}."
            )
        raise DownloadError(
            f"Downloading {info.url} failed after {DOWNLOAD_ATTEMPTS} attempts ({last_error}). "
            f"{part} keeps the bytes received so far; run the download again to resume, or "
            "download the file yourself and import it with SOURCE_FILE."
        ) from last_error

    def _fetch_once(self, info: WeightsInfo, part: Path, offset: int) -> None:
        """Append the bytes from ``offset`` on to ``part`` with one HTTP request."""
        request = urllib.request.Request(info.url, headers={"User-Agent": "FusedEO weight store"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 (manifest URL)
            status = response.status
            if offset and status == 200:
                # The server ignored the Range header and sends the whole file.
                self.reporter.warning(f"The server does not support resuming; restarting {info.file_name}.")
                offset = 0
            elif offset and status == 206:
                content_range = response.headers.get("Content-Range", "")
                if not content_range.startswith(f"bytes {offset}-"):
                    raise DownloadError(
                        f"Downloading {info.url}: the server responded to the range request for byte "
                        f"{offset:,} with Content-Range '{content_range}'."
                    )
            mode = "ab" if offset else "wb"
            received = offset
            with open(part, mode) as stream:
                while chunk := response.read(CHUNK_BYTES):
                    received += len(chunk)
                    if received > info.size_bytes:
                        raise DownloadError(
                            f"Downloading {info.url}: the server sent more than the expected "
                            f"{info.size_bytes:,} bytes; the URL serves a different file."
                        )
                    stream.write(chunk)
                    self.reporter.progress(100.0 * received / info.size_bytes)
                    if self.reporter.is_canceled():
                        raise RunCancelledError(
                            f"Downloading {info.file_name} was cancelled after {received:,} bytes; "
                            f"{part} is kept so that the next download resumes it."
                        )


KeyFilter = Callable[[Mapping[str, Any]], dict[str, Any]]
"""Maps a loaded checkpoint object to a flat ``{state-dict key: tensor}`` dict."""


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:KEY_LIST_LIMIT])
    more = f" and {len(keys) - KEY_LIST_LIMIT} more" if len(keys) > KEY_LIST_LIMIT else ""
    return f"{len(keys)} ({shown}{more})"


def load_checkpoint_strict(
    model: Any,
    path: Path | str,
    key_filter: KeyFilter,
    own_state: Mapping[str, Any] | None = None,
) -> None:
    """Load a checkpoint into ``model`` with strict key and shape matching.

    The file is read with ``torch.load(weights_only=True)``, so it can hold
    only tensors and plain containers. ``key_filter`` turns its content into
    the model's key layout (each encoder documents its filter). Every model key
    must then come either from the checkpoint or from ``own_state``, and the
    checkpoint may hold no other key. The tensors are assigned, not copied, so
    ``model`` may be built on the ``meta`` device.

    Args:
        model: A ``torch.nn.Module``.
        path: The checkpoint file (already verified by the store).
        key_filter: Maps the loaded object to a flat state dict.
        own_state: Model keys that are not learned weights and so must not be
            in the checkpoint (computed buffers, identity-initialised norms),
            with the tensors to use for them.

    Raises:
        ModelFileError: If the file cannot be read as a weights-only checkpoint.
        CheckpointKeyError: If keys are missing or unexpected, or shapes differ.
    """
    torch = import_optional("torch", "loading checkpoints")
    own_state = dict(own_state or {})
    try:
        loaded = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (torch raises many types for a bad file)
        raise ModelFileError(
            f"The checkpoint {path} could not be read as a weights-only torch file ({err}). "
            "Download or import it again through fusedeo:downloadweights."
        ) from err
    if not isinstance(loaded, Mapping):
        raise CheckpointKeyError(
            f"The checkpoint {path} contains a {type(loaded).__name__}, not a dict of tensors."
        )
    state = key_filter(loaded)

    model_shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    clashes = sorted(set(state) & set(own_state))
    missing = sorted(set(model_shapes) - set(state) - set(own_state))
    unexpected = sorted(set(state) - set(model_shapes))
    not_tensors = sorted(key for key, value in state.items() if not isinstance(value, torch.Tensor))
    wrong_shape = sorted(
        f"{key} {tuple(state[key].shape)} != {model_shapes[key]}"
        for key in set(state) & set(model_shapes)
        if isinstance(state[key], torch.Tensor) and tuple(state[key].shape) != model_shapes[key]
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if clashes:
        problems.append(f"keys the model computes itself: {_listed(clashes)}")
    if not_tensors:
        problems.append(f"entries that are not tensors: {_listed(not_tensors)}")
    if wrong_shape:
        problems.append(f"shape mismatches (checkpoint != model): {_listed(wrong_shape)}")
    if problems:
        raise CheckpointKeyError(
            f"The checkpoint {path} does not match {type(model).__name__} after the key "
            f"filter: {'; '.join(problems)}. It is not the checkpoint this encoder expects; "
            "check that the file is the one named in the model card."
        )
    state.update(own_state)
    model.load_state_dict(state, strict=True, assign=True)
    logger.debug("Loaded %d tensors from %s into %s.", len(state), path, type(model).__name__)


class _ScaledReporter:
    """Reporter that maps one file's 0–100 % onto its share of a multi-file run."""

    def __init__(self, reporter: Reporter, start: float, span: float) -> None:
        self._reporter = reporter
        self._start = start
        self._span = span

    def info(self, message: str) -> None:
        self._reporter.info(message)

    def warning(self, message: str) -> None:
        self._reporter.warning(message)

    def debug(self, message: str) -> None:
        self._reporter.debug(message)

    def progress(self, percent: float) -> None:
        self._reporter.progress(self._start + self._span * percent / 100.0)

    def is_canceled(self) -> bool:
        return self._reporter.is_canceled()


def fetch_encoder_weights(
    encoder_names: list[str],
    default_dir: Path | str | None,
    reporter: Reporter,
    source_file: Path | str | None = None,
    accept_licence: bool = False,
) -> tuple[Path, list[Path]]:
    """Download, or import from ``source_file``, the checkpoints of ``encoder_names``.

    Args:
        encoder_names: Encoders whose checkpoints to fetch.
        default_dir: Cache folder unless ``FUSEDEO_WEIGHTS_DIR`` is set.
        reporter: Receives licences, progress and messages.
        source_file: A local copy to import instead of downloading; only
            with exactly one encoder.
        accept_licence: Whether the user accepted licences that need it.

    Returns:
        The cache folder and the verified files, in ``encoder_names`` order.

    Raises:
        InputError: If no encoder is given, an encoder has no checkpoint, or
            ``source_file`` comes with more than one encoder.
        LicenceNotAcceptedError: If a licence needs acceptance (checked for
            all encoders before anything is fetched).
    """
    if not encoder_names:
        raise InputError("ENCODERS: no encoder selected; choose at least one, for example croma.")
    manifest = known_weights(encoder_names)
    without = [name for name in encoder_names if name not in manifest]
    if without:
        raise InputError(
            f"ENCODERS: {', '.join(without)} needs no checkpoint (training-free); "
            "remove it from the selection."
        )
    if source_file is not None and len(encoder_names) != 1:
        raise InputError(
            f"SOURCE_FILE: a local file can be imported for one encoder at a time, but "
            f"{len(encoder_names)} were selected ({', '.join(encoder_names)}); select only "
            "the encoder the file belongs to."
        )
    # Check every licence before the first byte moves.
    for name in encoder_names:
        check_licence_accepted(manifest[name], accept_licence)
    store = WeightStore(default_dir, reporter)

    files = []
    span = 100.0 / len(encoder_names)
    for index, name in enumerate(encoder_names):
        store.reporter = _ScaledReporter(reporter, index * span, span)
        if source_file is not None:
            files.append(store.import_local(manifest[name], source_file, accept_licence))
        else:
            files.append(store.download(manifest[name], accept_licence))
    return store.folder, files
