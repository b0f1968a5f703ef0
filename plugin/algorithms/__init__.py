"""The FusedEO Processing algorithms, one module each."""


def algorithm_classes() -> list[type]:
    """Return the algorithm classes the provider registers, in Toolbox order."""
    from .embed import EmbedAlgorithm

    return [EmbedAlgorithm]
