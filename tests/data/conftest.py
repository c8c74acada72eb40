from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def write_image(path: Path, seed: int = 0, size: int = 8, fmt: str | None = None, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    arr = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
    Image.fromarray(arr if channels == 3 else arr[:, :, 0], mode=mode).save(path, format=fmt)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run each data test on one intra-op thread (restored afterwards).

    These tests do many small tensor ops; on a shared 2-core machine, 2 OpenMP threads make them ~20x slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def make_image():
    """The ``write_image(path, seed=0, size=8, fmt=None, mode="RGB")`` helper."""
    return write_image


@pytest.fixture
def truncated():
    """The ``truncate(path, keep=0.5)`` helper: cut a file to a fraction of its bytes."""
    return truncate


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """root/{cat,dog,emu}/ with 3, 2 and 1 tiny PNG/JPEG images (one grayscale, one in a nested folder)."""
    root = tmp_path / "folder"
    write_image(root / "cat" / "a.png", 1)
    write_image(root / "cat" / "b.jpg", 2)
    write_image(root / "cat" / "sub" / "c.PNG", 3, fmt="PNG", mode="L")
    write_image(root / "dog" / "a.jpeg", 4)
    write_image(root / "dog" / "b.png", 5)
    write_image(root / "emu" / "x.bmp", 6)
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.png").write_bytes(b"junk")
    return root


@pytest.fixture
def domainbed_root(tmp_path: Path) -> Path:
    """root/{art,photo,sketch}/<class>/ with 10, 15 and 5 images; sketch lacks the class 'horse'."""
    root = tmp_path / "pacs"
    counts = {"art": {"dog": 4, "elephant": 3, "horse": 3}, "photo": {"dog": 5, "elephant": 5, "horse": 5},
              "sketch": {"dog": 3, "elephant": 2}}  # fmt: skip
    seed = 0
    for dom, per_class in counts.items():
        for cls, n in per_class.items():
            for i in range(n):
                seed += 1
                write_image(root / dom / cls / f"{i}.png", seed, size=6)
    return root
