"""Linear probes: fitting, NeuCo-Bench skill, ONNX export and loading.

A probe maps one embedding vector to one value: ridge regression for a
continuous target, logistic regression for a binary one. Features are
standardised before fitting, and the standardisation is folded into the
exported weights, so the ONNX graph is one affine map of the raw embedding
(followed by a sigmoid for classification).

Skill follows the NeuCo-Bench protocol: 40 shuffle splits (``random_state=42``)
that each hold out 10 % of the samples, scored with R² (regression) or binary
F1 (classification) on the held-out part. The task score over the splits is
``Q = 2 * mean / (0.02 + std)``, with the population standard deviation
(``ddof=0``). The regularisation strength is chosen by cross-validation
inside each training part, so held-out samples never influence it.
"""

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import (
    InputError,
    MissingFileError,
    ModelFileError,
    RunCancelledError,
    import_optional,
)
from ..neuco.scores import q_score
from ..reporting import Reporter

logger = logging.getLogger(__name__)

REGRESSION = "regression"
CLASSIFICATION = "classification"
TASKS: tuple[str, ...] = (REGRESSION, CLASSIFICATION)

N_SPLITS = 40
TEST_FRACTION = 0.1
RANDOM_STATE = 42
RIDGE_ALPHAS: np.ndarray = np.logspace(-3, 5, 17)
"""Ridge penalties tried, on standardised features."""
LOGISTIC_CS: np.ndarray = np.logspace(-4, 4, 9)
"""Inverse logistic penalties tried, on standardised features."""

PROBE_KIND = "probe"
INPUT_NAME = "embedding"
OUTPUT_NAME = "prediction"

# Keys of the ONNX metadata_props of a probe.
META_KIND = "fusedeo_kind"
META_TASK_NAME = "task_name"
META_TASK_TYPE = "task_type"
META_LABEL_NAME = "label_name"
META_LABEL_UNIT = "label_unit"
META_LABEL_MIN = "label_min"
META_LABEL_MAX = "label_max"
META_SKILL_METRIC = "skill_metric"
META_SKILL_MEAN = "skill_mean"
META_SKILL_STD = "skill_std"
META_SKILL_Q = "skill_q"
META_SKILL_SPLITS = "skill_splits"
META_SAMPLE_COUNT = "sample_count"
META_INPUT_WIDTH = "input_width"
META_FINGERPRINT = "embedding_fingerprint"
META_VERSION = "fusedeo_version"
META_REGULARISATION = "regularisation"


@dataclass
class Skill:
    """Cross-validated skill of a probe.

    Attributes:
        metric: ``"r2"`` or ``"f1"``.
        scores: Score of each split.
        test_count: Samples held out per split.
        notes: Deviations from the standard protocol, in words.
        oof_true: Targets of the samples held out at least once.
        oof_predicted: Their mean held-out prediction (the probability of
            class 1 for classification).
    """

    metric: str
    scores: np.ndarray
    test_count: int
    notes: list[str] = field(default_factory=list)
    oof_true: np.ndarray = field(default_factory=lambda: np.empty(0))
    oof_predicted: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def n_splits(self) -> int:
        """Number of splits scored."""
        return int(self.scores.size)

    @property
    def mean(self) -> float:
        """Mean score over the splits."""
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        """Population standard deviation of the scores."""
        return float(np.std(self.scores))

    @property
    def q(self) -> float:
        """NeuCo-Bench score Q of the splits."""
        return q_score(self.mean, self.std)


@dataclass
class LinearProbe:
    """A fitted probe as one affine map of the raw embedding.

    Attributes:
        task: ``"regression"`` or ``"classification"``.
        weights: ``(D,)`` float64 weights on the raw (unstandardised) embedding.
        bias: Intercept in label units (log-odds for classification).
        regularisation: Chosen penalty, e.g. ``"alpha=10"`` or ``"C=0.1"``.
        sample_count: Number of samples the probe was fitted on.
        estimator: The fitted scikit-learn pipeline (standardiser + model).
    """

    task: str
    weights: np.ndarray
    bias: float
    regularisation: str
    sample_count: int = 0
    estimator: Any = None

    @property
    def input_width(self) -> int:
        """Embedding width D the probe expects."""
        return int(self.weights.size)

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Predict with the folded weights in float64 (probability of class 1 for classification).

        Args:
            embeddings: ``(N, D)`` raw embeddings.

        Returns:
            ``(N,)`` predictions in label units, or probabilities.
        """
        linear = np.asarray(embeddings, dtype=np.float64) @ self.weights + self.bias
        if self.task == CLASSIFICATION:
            return 1.0 / (1.0 + np.exp(-linear))
        return linear


def split_plan(sample_count: int) -> tuple[int, int, list[str]]:
    """Return ``(n_splits, test_count, notes)`` of the shuffle splits for ``sample_count`` samples.

    NeuCo-Bench holds out 10 % per split. At least two samples are held out,
    because R² is undefined on one. With few samples there are fewer distinct
    held-out sets than :data:`N_SPLITS`, so the number of splits drops to that
    count, which the notes state.
    """
    notes: list[str] = []
    test_count = max(math.ceil(TEST_FRACTION * sample_count), 2)
    if test_count != math.ceil(TEST_FRACTION * sample_count):
        notes.append(f"{test_count} samples were held out per split (10 % would be fewer than 2).")
    distinct = math.comb(sample_count, test_count)
    n_splits = min(N_SPLITS, distinct)
    if n_splits < N_SPLITS:
        notes.append(
            f"Only {n_splits} splits were used instead of {N_SPLITS}: {sample_count} samples "
            f"allow only {distinct} distinct held-out sets of {test_count}."
        )
    return n_splits, test_count, notes


def _make_estimator(task: str, targets: np.ndarray):  # noqa: ANN202 (returns a sklearn Pipeline)
    """Build the standardiser + model pipeline, with the penalty chosen by inner cross-validation."""
    import_optional("sklearn", "training linear probes")
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task == REGRESSION:
        # RidgeCV without cv uses efficient leave-one-out cross-validation.
        return make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
    minority = int(np.min(np.bincount(targets.astype(np.int64), minlength=2)))
    if minority < 2:
        # Too few samples of one class for inner folds: keep the default penalty.
        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    folds = StratifiedKFold(n_splits=min(5, minority), shuffle=True, random_state=RANDOM_STATE)
    return make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=LOGISTIC_CS, cv=folds, scoring="f1", max_iter=2000, **_logistic_cv_options()
        ),
    )


def _logistic_cv_options() -> dict[str, Any]:
    """Options that keep LogisticRegressionCV a plain L2 model without FutureWarnings.

    scikit-learn 1.8 added ``l1_ratios`` and ``use_legacy_attributes`` and warns
    when they are left at their defaults; older releases do not accept them.
    """
    import inspect

    from sklearn.linear_model import LogisticRegressionCV

    accepted = inspect.signature(LogisticRegressionCV).parameters
    options: dict[str, Any] = {}
    if "l1_ratios" in accepted:
        options["l1_ratios"] = (0.0,)
    if "use_legacy_attributes" in accepted:
        options["use_legacy_attributes"] = False
    return options


def evaluate_skill(
    embeddings: np.ndarray, targets: np.ndarray, task: str, reporter: Reporter
) -> Skill:
    """Measure a probe's skill with NeuCo-Bench shuffle splits.

    Args:
        embeddings: ``(N, D)`` embeddings of the labelled patches.
        targets: ``(N,)`` targets (0/1 for classification).
        task: ``"regression"`` or ``"classification"``.
        reporter: Receives progress; its cancel state is checked per split.

    Returns:
        Scores per split and the mean held-out prediction per sample.

    Raises:
        RunCancelledError: If the reporter is cancelled.
    """
    from sklearn.metrics import f1_score, r2_score
    from sklearn.model_selection import ShuffleSplit

    sample_count = targets.size
    n_splits, test_count, notes = split_plan(sample_count)
    splitter = ShuffleSplit(n_splits=n_splits, test_size=test_count, random_state=RANDOM_STATE)
    scores: list[float] = []
    prediction_sum = np.zeros(sample_count)
    prediction_count = np.zeros(sample_count)
    single_class_splits = 0
    for index, (train, test) in enumerate(splitter.split(embeddings)):
        if reporter.is_canceled():
            raise RunCancelledError("Probe training was cancelled during cross-validation.")
        if task == CLASSIFICATION and np.unique(targets[train]).size < 2:
            # A training part with one class cannot fit a classifier; it predicts that class.
            single_class_splits += 1
            probability = np.full(test.size, float(targets[train][0]))
        else:
            estimator = _make_estimator(task, targets[train]).fit(embeddings[train], targets[train])
            if task == CLASSIFICATION:
                probability = estimator.predict_proba(embeddings[test])[:, 1]
            else:
                probability = estimator.predict(embeddings[test])
        if task == CLASSIFICATION:
            scores.append(f1_score(targets[test], probability >= 0.5, zero_division=0.0))
        else:
            scores.append(r2_score(targets[test], probability))
        prediction_sum[test] += probability
        prediction_count[test] += 1
        reporter.progress(100.0 * (index + 1) / n_splits)
    if single_class_splits:
        notes.append(
            f"{single_class_splits} split(s) had one class in the training part and predicted that class."
        )
    held_out = prediction_count > 0
    return Skill(
        metric="f1" if task == CLASSIFICATION else "r2",
        scores=np.asarray(scores, dtype=np.float64),
        test_count=test_count,
        notes=notes,
        oof_true=targets[held_out].astype(np.float64),
        oof_predicted=prediction_sum[held_out] / prediction_count[held_out],
    )


def fit_probe(embeddings: np.ndarray, targets: np.ndarray, task: str) -> LinearProbe:
    """Fit the final probe on all samples and fold the standardisation into its weights.

    Args:
        embeddings: ``(N, D)`` embeddings.
        targets: ``(N,)`` targets (0/1 for classification, both classes present).
        task: ``"regression"`` or ``"classification"``.

    Returns:
        The probe as weights on the raw embedding.
    """
    estimator = _make_estimator(task, targets).fit(embeddings, targets)
    scaler, model = estimator[0], estimator[-1]
    coefficients = np.ravel(model.coef_).astype(np.float64)
    intercept = float(np.ravel(model.intercept_)[0])
    weights = coefficients / scaler.scale_
    bias = intercept - float(np.sum(coefficients * scaler.mean_ / scaler.scale_))
    if task == REGRESSION:
        regularisation = f"alpha={float(model.alpha_):g}"
    elif hasattr(model, "C_"):
        regularisation = f"C={float(np.ravel(model.C_)[0]):g}"
    else:
        regularisation = f"C={model.C:g} (default; too few samples of one class to choose it)"
    return LinearProbe(
        task=task,
        weights=weights,
        bias=bias,
        regularisation=regularisation,
        sample_count=int(targets.size),
        estimator=estimator,
    )


def export_probe_onnx(probe: LinearProbe, path: str, metadata: dict[str, str]) -> None:
    """Write ``probe`` as an ONNX model with ``metadata`` in its metadata_props.

    The graph takes ``embedding`` ``[N, D]`` float32 and returns
    ``prediction`` ``[N, 1]`` float32. It computes in float64, because the
    folded weights act on raw embeddings whose scale can be large, and
    float32 would lose the agreement with scikit-learn.

    Args:
        probe: The fitted probe.
        path: Destination ``.onnx`` path.
        metadata: String metadata to store (see the ``META_*`` keys).
    """
    onnx = import_optional("onnx", "exporting probes")
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(probe.weights.reshape(-1, 1).astype(np.float64), "weights")
    bias = numpy_helper.from_array(np.array([probe.bias], dtype=np.float64), "bias")
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["embedding_f64"], to=TensorProto.DOUBLE),
        helper.make_node("MatMul", ["embedding_f64", "weights"], ["linear"]),
        helper.make_node("Add", ["linear", "bias"], ["affine"]),
    ]
    last = "affine"
    if probe.task == CLASSIFICATION:
        nodes.append(helper.make_node("Sigmoid", ["affine"], ["probability"]))
        last = "probability"
    nodes.append(helper.make_node("Cast", [last], [OUTPUT_NAME], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        nodes,
        "fusedeo_linear_probe",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", probe.input_width])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])],
        initializer=[weights, bias],
    )
    # Opset 13 and IR version 8 are older than what the installed onnx writes by
    # default, so that older onnxruntime builds in QGIS installs can load the probe.
    model = helper.make_model(
        graph, producer_name="FusedEO", opset_imports=[helper.make_opsetid("", 13)]
    )
    model.ir_version = 8
    helper.set_model_props(model, {META_KIND: PROBE_KIND, **metadata})
    onnx.checker.check_model(model)
    onnx.save(model, path)


@dataclass(frozen=True)
class ProbeInfo:
    """Input width and metadata read from a probe file.

    Attributes:
        path: The ``.onnx`` file.
        input_width: Embedding width D.
        metadata: All metadata_props as strings.
    """

    path: str
    input_width: int
    metadata: dict[str, str]

    @property
    def task_name(self) -> str:
        """The task name given at training."""
        return self.metadata.get(META_TASK_NAME, "probe")

    @property
    def task_type(self) -> str:
        """``"regression"`` or ``"classification"``."""
        return self.metadata.get(META_TASK_TYPE, REGRESSION)

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the embedding space the probe was trained in."""
        return self.metadata.get(META_FINGERPRINT, "")

    @property
    def label_range(self) -> tuple[float, float]:
        """``(min, max)`` of the training labels (0, 1 for classification)."""
        return float(self.metadata[META_LABEL_MIN]), float(self.metadata[META_LABEL_MAX])


def load_probe(path: str, parameter_name: str = "PROBE") -> ProbeInfo:
    """Read and check a probe file written by :func:`export_probe_onnx`.

    Raises:
        MissingFileError: If ``path`` does not exist.
        ModelFileError: If the file is not ONNX, or an ONNX model that is not
            a FusedEO probe.
    """
    from pathlib import Path

    onnx = import_optional("onnx", "reading probes")
    if not Path(path).is_file():
        raise MissingFileError(f"{parameter_name}: probe file '{path}' does not exist.")
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model)
    except Exception as err:  # noqa: BLE001 (protobuf and checker raise several types)
        raise ModelFileError(
            f"{parameter_name}: '{path}' is not a valid ONNX file ({type(err).__name__}: {err}). "
            "Give a probe written by fusedeo:trainprobe."
        ) from err
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    inputs = [value for value in model.graph.input if value.name == INPUT_NAME]
    required = (META_TASK_TYPE, META_LABEL_MIN, META_LABEL_MAX)
    if (
        metadata.get(META_KIND) != PROBE_KIND
        or not inputs
        or any(key not in metadata for key in required)
    ):
        raise ModelFileError(
            f"{parameter_name}: '{path}' is an ONNX model but not a FusedEO probe "
            f"({META_KIND}={metadata.get(META_KIND)!r}, input names "
            f"{[value.name for value in model.graph.input]}). Give a probe written by fusedeo:trainprobe."
        )
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 2 or dims[1].dim_value <= 0:
        raise ModelFileError(
            f"{parameter_name}: probe '{path}' has input '{INPUT_NAME}' of shape "
            f"{[dim.dim_value or dim.dim_param for dim in dims]}; expected [N, D]."
        )
    return ProbeInfo(path=path, input_width=int(dims[1].dim_value), metadata=metadata)


def onnx_session(path: str, parameter_name: str = "PROBE"):  # noqa: ANN201 (onnxruntime.InferenceSession)
    """Open ``path`` in onnxruntime on the CPU.

    Raises:
        ModelFileError: If onnxruntime cannot load the model.
    """
    from .device import onnx_providers

    onnxruntime = import_optional("onnxruntime", "running probes")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(
            path, sess_options=options, providers=onnx_providers("cpu")
        )
    except Exception as err:  # noqa: BLE001 (onnxruntime raises its own Fail/InvalidGraph types)
        raise ModelFileError(
            f"{parameter_name}: onnxruntime cannot load probe '{path}' ({err})."
        ) from err


def probe_sha256(path: str) -> str:
    """Return the sha256 hex digest of a file."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_targets(targets: np.ndarray, task: str, label_description: str) -> None:
    """Reject targets a probe cannot learn from.

    Raises:
        InputError: If regression targets are constant, or classification
            targets contain one class only.
    """
    distinct = np.unique(targets)
    if distinct.size >= 2:
        return
    if task == CLASSIFICATION:
        raise InputError(
            f"{label_description}: every labelled patch is class {distinct[0]:g}; a classification "
            "probe needs patches of both class 0 and class 1."
        )
    raise InputError(
        f"{label_description}: every labelled patch has the value {distinct[0]:g}; a regression "
        "probe needs labels that vary."
    )
