"""Feature store: raw fused vectors of valid patches, pooled over runs.

A feature store is a Zarr (v2) group in a folder:

- ``features``: float32 array ``(N, D)``, chunked by rows, appendable;
- ``ids``: string array ``(N,)``, one id per row, unique in the store;
- attributes: ``layout`` (fused blocks), ``encoders`` (names and settings),
  ``encoder_fingerprint`` and ``runs`` (provenance of every run that
  appended rows). The encoder fingerprint is a sha256 over encoders,
  settings and fitted arrays such as the mosaiks kernels. The compressor is
  not part of it, because the store keeps features before compression.

Rows from different runs can be pooled only when their layouts and encoder
fingerprints are equal, because otherwise the same index means a different
feature.
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, LayoutMismatchError, MissingFileError, import_optional

FORMAT = "fusedeo-feature-store"
FORMAT_VERSION = 1
_CHUNK_ROWS = 1024


def encoder_fingerprint(encoders: list[dict[str, Any]], layout: list[dict[str, Any]],
                        fitted: dict[str, dict[str, np.ndarray]]) -> str:
    """Return a sha256 over encoders, settings, layout and fitted arrays (no compressor)."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"encoders": encoders, "layout": layout}, sort_keys=True).encode())
    for encoder in sorted(fitted):
        for name in sorted(fitted[encoder]):
            array = np.ascontiguousarray(fitted[encoder][name])
            digest.update(f"{encoder}/{name}/{array.dtype.str}/{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


class FeatureStore:
    """Open feature store; the module docstring describes the format."""

    def __init__(self, group: Any, path: Path) -> None:
        """Wrap an open Zarr group (use :meth:`open` or :meth:`create_or_append`)."""
        self._group = group
        self.path = path

    @property
    def layout(self) -> list[dict[str, Any]]:
        """Fused blocks of every row."""
        return list(self._group.attrs["layout"])

    @property
    def encoders(self) -> list[dict[str, Any]]:
        """Encoders and settings that made the rows."""
        return list(self._group.attrs["encoders"])

    @property
    def encoder_fingerprint(self) -> str:
        """Fingerprint of the encoders and their fitted parts."""
        return str(self._group.attrs["encoder_fingerprint"])

    @property
    def runs(self) -> list[dict[str, Any]]:
        """Provenance of the runs that appended rows."""
        return list(self._group.attrs["runs"])

    @property
    def features(self) -> Any:
        """The Zarr array ``(N, D)``; slice it to read rows."""
        return self._group["features"]

    @property
    def ids(self) -> list[str]:
        """Row ids."""
        return [str(value) for value in self._group["ids"][:]]

    def __len__(self) -> int:
        """Number of rows."""
        return int(self._group["features"].shape[0])

    @classmethod
    def open(cls, path: str | Path, parameter: str = "FEATURES") -> "FeatureStore":
        """Open an existing store read-only.

        Raises:
            MissingFileError: If the folder does not exist.
            InputError: If it is not a FusedEO feature store.
        """
        zarr = import_optional("zarr", "reading feature stores")
        folder = Path(path)
        if not folder.is_dir():
            raise MissingFileError(f"{parameter}: feature store folder '{folder}' does not exist.")
        try:
            group = zarr.open_group(str(folder), mode="r")
            valid = group.attrs.get("format") == FORMAT and "features" in group and "ids" in group
        except (ValueError, KeyError, OSError) as err:
            raise InputError(f"{parameter}: '{folder}' is not a FusedEO feature store ({err}).") from err
        if not valid:
            raise InputError(f"{parameter}: '{folder}' is not a FusedEO feature store; give a folder written "
                             "by fusedeo:embed as OUTPUT_FEATURES.")
        return cls(group, folder)

    @classmethod
    def create_or_append(cls, path: str | Path, encoders: list[dict[str, Any]], layout: list[dict[str, Any]],
                         fingerprint: str) -> "FeatureStore":
        """Open a store for appending, creating it when the folder is absent or empty.

        Raises:
            LayoutMismatchError: If an existing store has another layout or fingerprint.
        """
        zarr = import_optional("zarr", "writing feature stores")
        folder = Path(path)
        if folder.is_dir() and any(folder.iterdir()):
            existing = cls.open(folder, "OUTPUT_FEATURES")
            check_compatible(existing, layout, fingerprint, "this run")
            return cls(zarr.open_group(str(folder), mode="r+"), folder)
        width = sum(block["channels"] * block["seasons"] for block in layout)
        group = zarr.open_group(str(folder), mode="w")
        group.create_dataset("features", shape=(0, width), chunks=(_CHUNK_ROWS, width), dtype="f4")
        group.create_dataset("ids", shape=(0,), chunks=(_CHUNK_ROWS * 16,), dtype=str)
        group.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "layout": layout,
                            "encoders": encoders, "encoder_fingerprint": fingerprint, "runs": []})
        return cls(group, folder)

    def append(self, ids: Sequence[str], features: np.ndarray, run: dict[str, Any]) -> None:
        """Append rows and record the run.

        Raises:
            InputError: If an id is already in the store or the widths differ.
        """
        existing = set(self.ids)
        duplicates = [identifier for identifier in ids if identifier in existing]
        if duplicates:
            raise InputError(f"OUTPUT_FEATURES: ids {duplicates[:5]} are already in '{self.path}'; "
                             "each run needs its own ids (the output name is part of them).")
        self._group["features"].append(np.asarray(features, dtype=np.float32), axis=0)
        self._group["ids"].append(np.asarray(list(ids), dtype=str))
        self._group.attrs["runs"] = self.runs + [run]


def check_compatible(store: FeatureStore, layout: list[dict[str, Any]], fingerprint: str, other: str) -> None:
    """Raise if ``store`` contains features of another layout or other fitted encoders.

    Raises:
        LayoutMismatchError: Naming both layouts or fingerprints.
    """
    if store.layout != layout:
        raise LayoutMismatchError(f"Feature store '{store.path}' has layout {json.dumps(store.layout)}, but "
                                  f"{other} has layout {json.dumps(layout)}; features of different encoders "
                                  "cannot be pooled.")
    if store.encoder_fingerprint != fingerprint:
        raise LayoutMismatchError(
            f"Feature store '{store.path}' was made with fitted encoder parts {store.encoder_fingerprint[:16]}, "
            f"but {other} uses {fingerprint[:16]}; embed with the same EMBEDDING_MODEL to pool features."
        )


@dataclass
class PooledFeatures:
    """Rows of one or more compatible feature stores, read into memory.

    Attributes:
        features: Fused vectors ``(N, D)``, float32, store after store.
        ids: Row ids, unique over all stores.
        layout: The common fused layout.
        encoders: Encoders and settings of the first store.
        encoder_fingerprint: The common encoder fingerprint.
        paths: Store folders in the order read.
    """

    features: np.ndarray
    ids: list[str]
    layout: list[dict[str, Any]]
    encoders: list[dict[str, Any]]
    encoder_fingerprint: str
    paths: list[Path]


def read_pooled(paths: Sequence[str | Path], parameter: str = "FEATURES") -> PooledFeatures:
    """Read the rows of several feature stores whose layouts and fingerprints match.

    Args:
        paths: Store folders; the first one sets the layout and fingerprint.
        parameter: Parameter name for messages.

    Raises:
        InputError: If no folder is given, a store is empty or ids repeat.
        LayoutMismatchError: If a store has another layout or fingerprint than the first.
    """
    if not paths:
        raise InputError(f"{parameter}: no feature store given; give at least one folder written by "
                         "fusedeo:embed as OUTPUT_FEATURES.")
    stores = [FeatureStore.open(path, parameter) for path in paths]
    first = stores[0]
    for store in stores[1:]:
        check_compatible(store, first.layout, first.encoder_fingerprint, f"feature store '{first.path}'")
    seen: dict[str, Path] = {}
    blocks, ids = [], []
    for store in stores:
        if len(store) == 0:
            raise InputError(f"{parameter}: feature store '{store.path}' has no rows.")
        store_ids = store.ids
        for identifier in store_ids:
            if identifier in seen:
                raise InputError(f"{parameter}: id '{identifier}' is in both '{seen[identifier]}' and "
                                 f"'{store.path}'; pool stores of runs with different output names.")
            seen[identifier] = store.path
        blocks.append(np.asarray(store.features[:], dtype=np.float32))
        ids.extend(store_ids)
    return PooledFeatures(np.concatenate(blocks, axis=0), ids, first.layout, first.encoders,
                          first.encoder_fingerprint, [store.path for store in stores])
