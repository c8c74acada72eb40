"""SInGE (arXiv:2207.04089): integrated-gradient channel relevance for structured pruning, entwined with fine-tuning.

Pure functions in :mod:`.functional`, Torch-Pruning plumbing and the ``SInGEImportance`` in :mod:`.pruning`, the
engine adapter and the entwined flowchart in :mod:`.task`, the experiment in :mod:`.runner` / :mod:`.experiment`.
"""
