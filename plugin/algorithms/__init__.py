"""The FusedEO Processing algorithms, one module each."""


def algorithm_classes() -> list[type]:
    """Return the algorithm classes the provider registers, in Toolbox order."""
    from .applyprobe import ApplyProbeAlgorithm
    from .embed import EmbedAlgorithm
    from .evaluate import EvaluateAlgorithm
    from .trainprobe import TrainProbeAlgorithm

    return [EmbedAlgorithm, TrainProbeAlgorithm, ApplyProbeAlgorithm, EvaluateAlgorithm]
