"""Embedding model: everything that fixes an embedding space, in one file.

Embeddings are comparable only when they come from the same encoders, with
the same settings, the same fitted parts (for example the mosaiks kernels)
and the same compressor. An embedding model stores all of them in one zip
file (``.fusedeo``): ``embedding_model.json`` (encoders, settings, fused
layout, compressor summary), one ``.npy`` per fitted array and
``compressor.onnx``. Its fingerprint is a sha256 over that content; rasters
and probes record it so that mismatched embedding spaces are rejected.
"""

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import MissingFileError, ModelFileError

FORMAT_VERSION = 1
_MANIFEST = "embedding_model.json"
_COMPRESSOR = "compressor.onnx"


@dataclass
class EmbeddingModel:
    """Encoders, their fitted arrays and the compressor of one embedding space.

    Attributes:
        encoders: ``[{"name": ..., "settings": {...}}, ...]`` in fused order.
        layout: Fused blocks as dicts (name, channels, seasons).
        fitted: Encoder name → array name → array.
        compressor: ONNX compressor bytes.
        compressor_summary: What the compressor is (kind, sizes, source).
    """

    encoders: list[dict[str, Any]]
    layout: list[dict[str, Any]]
    fitted: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    compressor: bytes = b""
    compressor_summary: dict[str, Any] = field(default_factory=dict)

    @property
    def encoder_names(self) -> list[str]:
        """Names of the encoders in fused order."""
        return [entry["name"] for entry in self.encoders]

    @property
    def compressor_sha256(self) -> str:
        """sha256 of the compressor bytes."""
        return hashlib.sha256(self.compressor).hexdigest()

    @property
    def fingerprint(self) -> str:
        """sha256 over encoders, settings, layout, fitted arrays and compressor."""
        digest = hashlib.sha256()
        digest.update(json.dumps({"encoders": self.encoders, "layout": self.layout},
                                 sort_keys=True).encode())
        for encoder in sorted(self.fitted):
            for name in sorted(self.fitted[encoder]):
                array = np.ascontiguousarray(self.fitted[encoder][name])
                digest.update(f"{encoder}/{name}/{array.dtype.str}/{array.shape}".encode())
                digest.update(array.tobytes())
        digest.update(self.compressor_sha256.encode())
        return digest.hexdigest()

    def save(self, path: str | Path) -> None:
        """Write the model as a zip file at ``path``."""
        manifest = {
            "format": "fusedeo-embedding-model",
            "format_version": FORMAT_VERSION,
            "fusedeo_version": __version__,
            "fingerprint": self.fingerprint,
            "encoders": self.encoders,
            "layout": self.layout,
            "compressor": dict(self.compressor_summary, sha256=self.compressor_sha256),
            "arrays": sorted(f"{encoder}/{name}" for encoder in self.fitted for name in self.fitted[encoder]),
        }
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
            for encoder, arrays in self.fitted.items():
                for name, array in arrays.items():
                    buffer = io.BytesIO()
                    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
                    archive.writestr(f"arrays/{encoder}/{name}.npy", buffer.getvalue())
            archive.writestr(_COMPRESSOR, self.compressor)

    @classmethod
    def load(cls, path: str | Path) -> "EmbeddingModel":
        """Read a model written by :meth:`save` and check its fingerprint.

        Raises:
            MissingFileError: If the file does not exist.
            ModelFileError: If it is not a valid FusedEO embedding model.
        """
        file = Path(path)
        if not file.is_file():
            raise MissingFileError(f"EMBEDDING_MODEL: file '{file}' does not exist.")
        try:
            with zipfile.ZipFile(file) as archive:
                manifest = json.loads(archive.read(_MANIFEST))
                fitted: dict[str, dict[str, np.ndarray]] = {}
                for entry in manifest["arrays"]:
                    encoder, name = entry.split("/", 1)
                    data = archive.read(f"arrays/{encoder}/{name}.npy")
                    fitted.setdefault(encoder, {})[name] = np.load(io.BytesIO(data), allow_pickle=False)
                compressor = archive.read(_COMPRESSOR)
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as err:
            raise ModelFileError(
                f"EMBEDDING_MODEL: '{file}' is not a FusedEO embedding model ({type(err).__name__}: {err}). "
                "Give the file that fusedeo:embed wrote as OUTPUT_EMBEDDING_MODEL."
            ) from err
        if manifest.get("format") != "fusedeo-embedding-model" or manifest.get("format_version") != FORMAT_VERSION:
            raise ModelFileError(f"EMBEDDING_MODEL: '{file}' has format {manifest.get('format')!r} version "
                                 f"{manifest.get('format_version')!r}; expected fusedeo-embedding-model "
                                 f"version {FORMAT_VERSION}.")
        summary = {key: value for key, value in manifest["compressor"].items() if key != "sha256"}
        model = cls(manifest["encoders"], manifest["layout"], fitted, compressor, summary)
        if model.fingerprint != manifest["fingerprint"]:
            raise ModelFileError(f"EMBEDDING_MODEL: '{file}' is damaged: its content does not match its "
                                 f"fingerprint {manifest['fingerprint'][:16]}.")
        return model
