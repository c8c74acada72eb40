"""frugalvision: ten 2022 papers on frugal, efficient computer vision as one tested toolkit."""

__version__ = "0.1.0"
