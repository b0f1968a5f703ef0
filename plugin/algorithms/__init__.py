"""The FusedEO Processing algorithms, one module each."""


def algorithm_classes() -> list[type]:
    """Return the algorithm classes the provider registers, in Toolbox order."""
    from .applyprobe import ApplyProbeAlgorithm
    from .downloadweights import DownloadWeightsAlgorithm
    from .embed import EmbedAlgorithm
    from .trainprobe import TrainProbeAlgorithm

    return [EmbedAlgorithm, TrainProbeAlgorithm, ApplyProbeAlgorithm, DownloadWeightsAlgorithm]
