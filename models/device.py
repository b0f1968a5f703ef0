"""Compute-device selection for torch encoders and onnxruntime sessions, and the usable CPU count."""

import os

from ..errors import DeviceError, InputError, import_optional
from ..reporting import Reporter

DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def select_torch_device(request: str, reporter: Reporter) -> str:
    """Resolve the ``DEVICE`` parameter to a torch device string.

    Args:
        request: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        reporter: Receives the decision.

    Returns:
        ``"cpu"`` or ``"cuda"``.

    Raises:
        InputError: If ``request`` is not a known choice.
        DeviceError: If ``"cuda"`` is requested and no CUDA device is usable.
    """
    if request not in DEVICE_CHOICES:
        raise InputError(f"DEVICE: '{request}' is not valid; expected one of auto, cpu, cuda.")
    torch = import_optional("torch", "running encoders")
    cuda_available = bool(torch.cuda.is_available())
    if request == "cuda" and not cuda_available:
        raise DeviceError(
            "DEVICE: 'cuda' was requested but torch reports no usable CUDA device "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}). "
            "Choose DEVICE=cpu or auto, or install a CUDA-enabled torch and NVIDIA driver."
        )
    device = "cuda" if request in ("cuda", "auto") and cuda_available else "cpu"
    if device == "cuda":
        reporter.info(f"Device: cuda ({torch.cuda.get_device_name(0)}).")
    elif request == "auto":
        reporter.info(f"Device: cpu (no CUDA device found; {torch.get_num_threads()} threads).")
    else:
        reporter.info(f"Device: cpu ({torch.get_num_threads()} threads).")
    return device


def onnx_providers(device: str) -> list[str]:
    """Return the onnxruntime execution providers to request for ``device``."""
    onnxruntime = import_optional("onnxruntime", "running ONNX models")
    available = onnxruntime.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def usable_cpu_count() -> int:
    """Return the number of CPUs this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
