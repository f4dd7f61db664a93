"""``lungseg predict``: segment X-rays into masks, overlays and one results table.

:mod:`~lungseg.predict.inputs` expands what the user named, :mod:`~lungseg.predict.runner`
segments it (batched, in workers, sharded under torchrun), :mod:`~lungseg.predict.outputs`
writes every file atomically and keeps the journal that makes reruns skip finished work.
"""

from lungseg.predict.inputs import InputImage, collect_inputs
from lungseg.predict.runner import PredictOptions, PredictSummary, predict

__all__ = ["InputImage", "PredictOptions", "PredictSummary", "collect_inputs", "predict"]
