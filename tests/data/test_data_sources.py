import pytest
import torch

from frugalvision.data import (
    FASHION_MNIST_CLASSES,
    available_default_source,
    find_fashion_mnist,
    list_sources,
    load_source,
    sources,
    write_idx,
)
from frugalvision.errors import DataError


def _fake_fashion(folder, n_train=12, n_test=5, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{sfx}", torch.randint(0, 256, (n, 28, 28), generator=gen).byte())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{sfx}", (torch.arange(n) % 10).byte())
    return folder


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No Debian package, empty cache, and a download that fails like an offline machine."""
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.setenv("FRUGALVISION_CACHE", str(tmp_path / "cache"))

    def offline(dest, train):
        raise OSError("[Errno -3] Temporary failure in name resolution\nsecond line")

    monkeypatch.setattr(sources, "_download_fashion_mnist", offline)
    return tmp_path


def test_registry():
    assert {"fashion-mnist", "mnist5k", "digits"} <= set(list_sources())
    with pytest.raises(DataError, match="unknown data source 'cifar'.*digits.*fashion-mnist.*mnist5k"):
        load_source("cifar")


def test_fashion_mnist_real():
    if find_fashion_mnist(train=True) is None or find_fashion_mnist(train=False) is None:
        pytest.skip("Fashion-MNIST not installed offline (apt-get install dataset-fashion-mnist)")
    train, test = load_source("fashion-mnist"), load_source("fashion-mnist", train=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.classes == FASHION_MNIST_CLASSES and len(train.classes) == 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert available_default_source() == "fashion-mnist"


@pytest.mark.parametrize("sub", ["", "fashion-mnist"])
def test_root_is_looked_up_first(tmp_path, sub):
    _fake_fashion(tmp_path / sub if sub else tmp_path, gz=bool(sub))
    train = load_source("fashion-mnist", root=tmp_path)
    test = load_source("fashion-mnist", root=tmp_path, train=False)
    assert train.images.shape == (12, 1, 28, 28) and len(test) == 5  # the tiny copy, not the Debian one
    assert train.labels.tolist()[:3] == [0, 1, 2]


def test_debian_path_without_a_root(nowhere, monkeypatch):
    _fake_fashion(nowhere / "deb")
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", nowhere / "deb")
    assert len(load_source("fashion-mnist")) == 12
    assert available_default_source() == "fashion-mnist"


@pytest.mark.parametrize("kind", ["empty", "file", "other-files", "missing"])
def test_a_given_root_without_the_data_is_an_error_never_another_copy(nowhere, monkeypatch, kind):
    _fake_fashion(nowhere / "deb")
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", nowhere / "deb")  # a copy that must NOT be used
    root = nowhere / "root"
    if kind == "file":
        root.write_text("not a folder")
    elif kind != "missing":
        root.mkdir()
        if kind == "other-files":
            (root / "README.txt").write_text("hello")
    for call in (lambda: load_source("fashion-mnist", root=root), lambda: available_default_source(root)):
        with pytest.raises(DataError) as err:
            call()
        message = str(err.value)
        assert "\n" not in message and f"--data-root {root}" in message and "train-images-idx3-ubyte" in message


def test_loads_are_recorded_with_the_folder_actually_read(tmp_path):
    from frugalvision.data import provenance

    start = provenance.mark()
    _fake_fashion(tmp_path)
    load_source("fashion-mnist", root=tmp_path)
    load_source("digits", train=False)
    sources_read, skipped = provenance.since(start)
    assert sources_read[0] == {"name": "fashion-mnist", "path": str(tmp_path), "split": "train"}
    assert sources_read[1]["name"] == "digits" and sources_read[1]["split"] == "test" and skipped == []


def test_cache_after_download(nowhere, monkeypatch):
    def fake_download(dest, train):
        _fake_fashion(dest / "FashionMNIST" / "raw", n_train=3)

    monkeypatch.setattr(sources, "_download_fashion_mnist", fake_download)
    assert len(load_source("fashion-mnist")) == 3


def test_missing_everywhere_one_line_error(nowhere):
    with pytest.raises(DataError) as err:
        load_source("fashion-mnist")
    msg = str(err.value)
    assert "\n" not in msg
    assert "--data-root" in msg
    assert str(nowhere / "no-debian") in msg
    assert "download" in msg and str(nowhere / "cache") in msg and "name resolution" in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert available_default_source() == "mnist5k"


def test_offline_env_disables_download(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    monkeypatch.setenv("FRUGALVISION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FRUGALVISION_OFFLINE", "1")  # the real downloader must refuse before touching torchvision
    with pytest.raises(DataError, match="FRUGALVISION_OFFLINE"):
        load_source("fashion-mnist")


def test_corrupt_file_in_root_names_it(tmp_path):
    folder = _fake_fashion(tmp_path)
    bad = folder / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError) as err:
        load_source("fashion-mnist", root=tmp_path)
    assert str(bad) in str(err.value)


def test_label_count_mismatch(tmp_path):
    folder = _fake_fashion(tmp_path)
    write_idx(folder / "train-labels-idx1-ubyte.gz", torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(DataError, match="12 images but"):
        load_source("fashion-mnist", root=tmp_path)


@pytest.mark.parametrize(
    ("name", "shape", "n_train", "n_test"), [("mnist5k", (1, 28, 28), 4000, 1000), ("digits", (1, 8, 8), None, None)]
)
def test_builtin_sources_split(name, shape, n_train, n_test):
    train, test = load_source(name), load_source(name, train=False)
    assert (
        train.image_shape == shape
        and train.images.dtype == torch.uint8
        and train.classes == [str(i) for i in range(10)]
    )
    if n_train is not None:
        assert (len(train), len(test)) == (n_train, n_test)
        assert torch.bincount(train.labels).tolist() == [400] * 10
    else:
        assert len(train) + len(test) == 1797 and abs(len(test) / 1797 - 0.2) < 0.02
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    # deterministic and disjoint: no test image is (byte-identical to) a train image at the same position
    again = load_source(name)
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    flat_train = {bytes(x.flatten().tolist()) for x in train.images}
    overlap = sum(bytes(x.flatten().tolist()) in flat_train for x in test.images)
    assert overlap <= (5 if name == "digits" else 0)  # digits has a few exact duplicate 8x8 images


def test_textures_photos_and_pretrained_weights_are_recorded_too():
    from frugalvision.data import provenance
    from frugalvision.data.object_composites import background_image
    from frugalvision.data.shifts import load_texture
    from frugalvision.nn.efficientnet import efficientnet_lite0

    start = provenance.mark()
    load_texture("brick")
    load_texture("brick")  # cached image, still recorded for this unit
    background_image("china")
    efficientnet_lite0()
    names = [entry["name"] for entry in provenance.since(start)[0]]
    assert names == ["skimage.data.brick", "sklearn sample image china.jpg", "efficientnet-lite0 weights"]
