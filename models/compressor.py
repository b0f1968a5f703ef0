"""Compressors: fused vectors ``(N, D)`` → embeddings ``(N, K)`` as ONNX models.

A compressor is an ONNX model with one float32 input ``features [N, D]`` and
one float32 output ``embedding [N, K]``, run by onnxruntime. The training-free
kind is PCA, fitted here from fused vectors streamed from disk: the mean and
the covariance are accumulated in float64 chunks, so memory depends on ``D``,
not on the number of patches.
"""

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LayoutMismatchError, ModelFileError, import_optional
from ..reporting import Reporter
from .device import onnx_providers

logger = logging.getLogger(__name__)

INPUT_NAME = "features"
OUTPUT_NAME = "embedding"
_CHUNK_ROWS = 4096


def iter_chunks(features: np.ndarray, rows: int = _CHUNK_ROWS) -> Iterator[np.ndarray]:
    """Yield consecutive row chunks of a (memory-mapped) 2-D array."""
    for start in range(0, features.shape[0], rows):
        yield np.asarray(features[start:start + rows])


def fit_pca(features: np.ndarray, components: int, layout: list[dict[str, Any]]) -> tuple[bytes, dict[str, Any]]:
    """Fit PCA on fused vectors and export it as an ONNX compressor.

    Args:
        features: Fused vectors ``(N, D)`` (may be a memory map).
        components: Number of principal components ``K`` (at most ``N - 1``
            and ``D``; the caller caps it).
        layout: Fused layout (block dicts) recorded in the model metadata.

    Returns:
        The ONNX model as bytes, and a summary (explained variance).

    Raises:
        ModelFileError: If fewer than two samples or an invalid ``components``.
    """
    samples, width = features.shape
    if samples < 2 or not 1 <= components <= min(samples - 1, width):
        raise ModelFileError(
            f"PCA: cannot fit {components} components on {samples} sample(s) of width {width}; "
            "need at least 2 samples and 1 <= components <= min(samples - 1, width)."
        )
    total = np.zeros(width, dtype=np.float64)
    for chunk in iter_chunks(features):
        total += chunk.sum(axis=0, dtype=np.float64)
    mean = total / samples
    if samples <= width:
        # Fewer samples than dimensions: the centred data matrix is smaller than
        # the covariance, so take the SVD of the data itself.
        centred = np.asarray(features, dtype=np.float64) - mean
        _, singular, rows = np.linalg.svd(centred, full_matrices=False)
        variance = singular[:components] ** 2 / (samples - 1)
        basis = rows[:components].T.copy()
        total_variance = float((singular**2).sum() / (samples - 1))
    else:
        linalg = import_optional("scipy.linalg", "fitting PCA")
        covariance = np.zeros((width, width), dtype=np.float64)
        for chunk in iter_chunks(features):
            centred = chunk.astype(np.float64) - mean
            covariance += centred.T @ centred
        covariance /= samples - 1
        eigenvalues, eigenvectors = linalg.eigh(covariance, subset_by_index=[width - components, width - 1])
        order = np.argsort(eigenvalues)[::-1]
        variance, basis = np.clip(eigenvalues[order], 0.0, None), eigenvectors[:, order]
        total_variance = float(np.trace(covariance))
    # Fix each component's sign (largest loading positive) so that refits give the same output.
    signs = np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(components)])
    basis *= np.where(signs == 0, 1.0, signs)
    explained = variance / max(total_variance, 1e-30)
    summary = {
        "kind": "pca",
        "samples": int(samples),
        "input_width": int(width),
        "components": int(components),
        "explained_variance_ratio_total": float(explained.sum()),
    }
    model = _linear_onnx(mean.astype(np.float32), basis.astype(np.float32), summary, layout)
    return model, summary


def _linear_onnx(mean: np.ndarray, basis: np.ndarray, summary: dict[str, Any],
                 layout: list[dict[str, Any]]) -> bytes:
    """Build ``embedding = (features - mean) @ basis`` as an ONNX model."""
    onnx = import_optional("onnx", "exporting the PCA compressor")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    width, components = basis.shape
    graph = helper.make_graph(
        nodes=[
            helper.make_node("Sub", [INPUT_NAME, "mean"], ["centred"]),
            helper.make_node("MatMul", ["centred", "basis"], [OUTPUT_NAME]),
        ],
        name="fusedeo_pca_compressor",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["N", width])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, ["N", components])],
        initializer=[numpy_helper.from_array(mean, "mean"), numpy_helper.from_array(basis, "basis")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="FusedEO")
    model.ir_version = 8
    for key, value in (("fusedeo_kind", "pca"), ("fusedeo_summary", json.dumps(summary)),
                       ("fusedeo_layout", json.dumps(layout))):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model.SerializeToString()


class OnnxCompressor:
    """An ONNX compressor loaded into onnxruntime.

    Attributes:
        source: File name or description, for messages.
        sha256: Hash of the model bytes.
        input_width: ``D``.
        output_width: ``K``.
        metadata: The model's metadata properties.
        providers: Execution providers of the session, in priority order.
    """

    def __init__(self, model_bytes: bytes, source: str, device: str = "cpu") -> None:
        """Load and check a compressor.

        Raises:
            ModelFileError: If the bytes are not a usable ONNX compressor.
        """
        onnxruntime = import_optional("onnxruntime", "running the ONNX compressor")
        self.source = source
        self.sha256 = hashlib.sha256(model_bytes).hexdigest()
        self.model_bytes = model_bytes
        try:
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3
            self.session = onnxruntime.InferenceSession(model_bytes, options, providers=onnx_providers(device))
        except Exception as err:  # onnxruntime raises its own untyped errors for invalid models
            raise ModelFileError(
                f"COMPRESSOR: '{source}' is not a valid ONNX model ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:200]}). Give an .onnx compressor made by FusedEO or another "
                "ONNX model with one float input [N, D] and one float output [N, K]."
            ) from err
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1 or len(inputs[0].shape) != 2 or len(outputs[0].shape) != 2:
            raise ModelFileError(
                f"COMPRESSOR: '{source}' has inputs {[(i.name, i.shape) for i in inputs]} and outputs "
                f"{[(o.name, o.shape) for o in outputs]}; expected one input [N, D] and one output [N, K]."
            )
        if inputs[0].type != "tensor(float)":
            raise ModelFileError(f"COMPRESSOR: '{source}' takes {inputs[0].type}; expected tensor(float).")
        self.input_name = inputs[0].name
        self.input_width = inputs[0].shape[1]
        self.output_width = outputs[0].shape[1]
        if not isinstance(self.input_width, int) or not isinstance(self.output_width, int):
            raise ModelFileError(f"COMPRESSOR: '{source}' must have fixed widths D and K; it has input "
                                 f"{inputs[0].shape} and output {outputs[0].shape}.")
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.providers = list(self.session.get_providers())

    @classmethod
    def from_file(cls, path: str | Path, device: str = "cpu") -> "OnnxCompressor":
        """Load a compressor from an .onnx file.

        Raises:
            ModelFileError: If the file is missing or invalid.
        """
        file = Path(path)
        if not file.is_file():
            raise ModelFileError(f"COMPRESSOR: file '{file}' does not exist.")
        return cls(file.read_bytes(), file.name, device)

    @property
    def kind(self) -> str:
        """``pca``, another FusedEO kind, or ``onnx`` for foreign models."""
        return self.metadata.get("fusedeo_kind", "onnx")

    def check_layout(self, layout: list[dict[str, Any]]) -> None:
        """Reject a compressor made for another fused layout.

        Raises:
            LayoutMismatchError: If the width or the recorded layout differs.
        """
        width = sum(block["channels"] * block["seasons"] for block in layout)
        described = ", ".join(f"{block['name']} {block['channels']}x{block['seasons']}" for block in layout)
        if self.input_width != width:
            raise LayoutMismatchError(
                f"COMPRESSOR: '{self.source}' takes fused vectors of width {self.input_width}, but the "
                f"selected encoders give width {width} ({described}). Use a compressor trained for these "
                "encoders, or leave COMPRESSOR empty to fit PCA on this run."
            )
        recorded = self.metadata.get("fusedeo_layout")
        if recorded is not None and json.loads(recorded) != layout:
            raise LayoutMismatchError(
                f"COMPRESSOR: '{self.source}' was made for the fused layout {recorded}, but this run's layout "
                f"is {json.dumps(layout)}. Use a compressor trained for these encoders and settings."
            )

    def check_encoder_fingerprint(self, fingerprint: str) -> None:
        """Reject a compressor trained on features of other fitted encoder parts (such as other mosaiks kernels).

        Compressors without a recorded fingerprint (PCA, foreign models) pass.

        Raises:
            LayoutMismatchError: Naming both fingerprints.
        """
        recorded = self.metadata.get("fusedeo_encoder_fingerprint")
        if recorded is not None and recorded != fingerprint:
            raise LayoutMismatchError(
                f"COMPRESSOR: '{self.source}' was trained on features of fitted encoder parts {recorded[:16]}, but "
                f"this run's encoders have {fingerprint[:16]}. Set EMBEDDING_MODEL to the embedding model whose "
                "feature stores trained the compressor, so this run uses the same encoder parts."
            )

    def compress(self, features: np.ndarray) -> np.ndarray:
        """Return the embeddings ``(N, K)`` of fused vectors ``(N, D)``."""
        output = self.session.run(None, {self.input_name: np.ascontiguousarray(features, dtype=np.float32)})
        return np.asarray(output[0], dtype=np.float32)

    def report_providers(self, reporter: Reporter) -> None:
        """Tell the user which execution provider runs the compressor."""
        reporter.info(f"Compressor '{self.source}' ({self.kind}, {self.input_width} -> {self.output_width}) "
                      f"runs on onnxruntime {self.providers[0]}.")
