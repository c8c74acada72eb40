"""SInGE (arXiv:2207.04089): integrated-gradient channel relevance for structured pruning, entwined with fine-tuning.

Pure functions in :mod:`.functional`, Torch-Pruning plumbing and the ``SInGEImportance`` in :mod:`.pruning`, ViT MLP
units and attention heads in :mod:`.vit`, the engine adapter and the entwined flowchart in :mod:`.task`, data
(in-memory sources, CIFAR-10 binary, ImageNet ImageFolder) in :mod:`.data`, the experiment in :mod:`.runner` /
:mod:`.experiment`.
"""
