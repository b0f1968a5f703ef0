"""The FusedEO Processing algorithms, one module each."""


def algorithm_classes() -> list[type]:
    """Return the algorithm classes the provider registers, in Toolbox order."""
    from .applyprobe import ApplyProbeAlgorithm
    from .embed import EmbedAlgorithm
    from .traincompressor import TrainCompressorAlgorithm
    from .trainprobe import TrainProbeAlgorithm

    return [EmbedAlgorithm, TrainCompressorAlgorithm, TrainProbeAlgorithm, ApplyProbeAlgorithm]
