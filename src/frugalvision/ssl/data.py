"""Datasets of dict samples for the semi-supervised frameworks (images plus any per-sample fields)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.utils.data import Dataset

from frugalvision.errors import DataError

__all__ = ["TensorDictDataset"]


class TensorDictDataset(Dataset):
    """Rows of equally long tensors served as dicts, with uint8 images turned into floats in ``[0, 1]``.

    Args:
        fields: name -> tensor with the samples along dim 0; must hold ``"image"`` (uint8 or float ``[N, C, H, W]``)
            and ``"label"`` (int ``[N]``, -1 when unknown). Other uint8 fields are scaled the same way.

    Raises:
        DataError: a field is missing or the lengths differ.
    """

    def __init__(self, fields: Mapping[str, torch.Tensor]) -> None:
        missing = [key for key in ("image", "label") if key not in fields]
        if missing:
            raise DataError(f"TensorDictDataset needs the fields {missing}; pass images and labels (-1: unknown)")
        lengths = {key: len(value) for key, value in fields.items()}
        if len(set(lengths.values())) != 1:
            raise DataError(f"TensorDictDataset fields have different lengths {lengths}; pass one row per sample")
        self.fields = dict(fields)

    def __len__(self) -> int:
        return len(self.fields["image"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in self.fields.items():
            row = value[index]
            out[key] = row.float().div_(255.0) if row.dtype == torch.uint8 else row
        return out

    def subset(self, index: torch.Tensor) -> TensorDictDataset:
        """The rows ``index`` as a new dataset."""
        return TensorDictDataset({key: value[index] for key, value in self.fields.items()})
