"""The FusedEO Processing algorithms, one module each."""


def algorithm_classes() -> list[type]:
    """Return the algorithm classes the provider registers, in Toolbox order."""
    from .applyprobe import ApplyProbeAlgorithm
    from .checksubmission import CheckSubmissionAlgorithm
    from .downloadweights import DownloadWeightsAlgorithm
    from .embed import EmbedAlgorithm
    from .embedssl4eo import EmbedSsl4eoAlgorithm
    from .evaluate import EvaluateAlgorithm
    from .traincompressor import TrainCompressorAlgorithm
    from .trainprobe import TrainProbeAlgorithm

    return [EmbedAlgorithm, EmbedSsl4eoAlgorithm, CheckSubmissionAlgorithm, TrainCompressorAlgorithm,
            TrainProbeAlgorithm, ApplyProbeAlgorithm, EvaluateAlgorithm, DownloadWeightsAlgorithm]
