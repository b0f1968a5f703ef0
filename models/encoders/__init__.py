"""Encoder registry: names accepted by ``ENCODERS`` and their fused-block order."""

import importlib
import inspect
from pathlib import Path
from typing import Any

from ...errors import InputError
from ...reporting import Reporter
from .base import Encoder, EncoderCard

ENCODER_NAMES: tuple[str, ...] = ("mosaiks", "croma", "dofa", "scalemae", "copernicusfm", "prithvi")
"""Known encoders, in the fixed order their blocks take in the fused vector."""

_ENCODER_CLASSES: dict[str, str] = {
    "mosaiks": "MosaiksEncoder",
    "croma": "CromaEncoder",
    "dofa": "DofaEncoder",
    "scalemae": "ScaleMaeEncoder",
    "copernicusfm": "CopernicusFmEncoder",
    "prithvi": "PrithviEncoder",
}
"""Class name of each encoder in its module ``<name>.py``."""


def create_encoder(name: str, device: str = "cpu", checkpoint: Path | None = None,
                   reporter: Reporter | None = None, **settings: Any) -> Encoder:
    """Build the encoder called ``name``.

    Settings that the encoder's constructor does not take (for example the
    weights hash that ``settings()`` records) are not passed; a caller that
    rebuilds an encoder from stored settings compares ``settings()`` or the
    embedding fingerprint afterwards.

    Args:
        name: One of :data:`ENCODER_NAMES`.
        device: torch device string (``"cpu"`` or ``"cuda"``).
        checkpoint: Verified checkpoint for encoders with weights.
        reporter: Receives the encoder's decisions, where it takes one.
        **settings: Encoder-specific settings, as returned by ``settings()``.

    Returns:
        The encoder, ready to fit or encode.

    Raises:
        InputError: If ``name`` is not a known encoder.
    """
    if name not in _ENCODER_CLASSES:
        raise InputError(
            f"ENCODERS: unknown encoder '{name}'; expected one of {', '.join(ENCODER_NAMES)}."
        )
    module = importlib.import_module(f".{name}", __name__)
    encoder_class: type[Encoder] = getattr(module, _ENCODER_CLASSES[name])
    accepted = inspect.signature(encoder_class.__init__).parameters
    arguments = {key: value for key, value in settings.items() if key in accepted}
    if checkpoint is not None:
        arguments["checkpoint"] = checkpoint
    if reporter is not None and "reporter" in accepted:
        arguments["reporter"] = reporter
    return encoder_class(device=device, **arguments)


def encoder_card(name: str) -> EncoderCard:
    """Return the model card of encoder ``name`` without building the encoder.

    Each encoder module ``<name>.py`` defines a module-level ``CARD`` and
    imports torch only inside its functions, so this stays cheap.

    Raises:
        InputError: If ``name`` is not a known encoder.
    """
    if name not in ENCODER_NAMES:
        raise InputError(
            f"ENCODERS: unknown encoder '{name}'; expected one of {', '.join(ENCODER_NAMES)}."
        )
    try:
        module = importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise InputError(
            f"ENCODERS: the encoder '{name}' is not part of this FusedEO build "
            f"(module {err.name} is missing); choose another encoder or update the plugin."
        ) from err
    card: EncoderCard = module.CARD
    return card


def ordered_encoder_names(names: list[str]) -> list[str]:
    """Return ``names`` without duplicates, in the fixed fused-block order.

    Raises:
        InputError: If a name is unknown or the list is empty.
    """
    unknown = [name for name in names if name not in ENCODER_NAMES]
    if unknown:
        raise InputError(
            f"ENCODERS: unknown encoder(s) {', '.join(unknown)}; "
            f"expected any of {', '.join(ENCODER_NAMES)}."
        )
    if not names:
        raise InputError("ENCODERS: no encoder selected; choose at least one, for example mosaiks.")
    return [name for name in ENCODER_NAMES if name in names]
