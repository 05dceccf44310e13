"""MNIST / Fashion-MNIST loading from local IDX files (hjtranslate.data)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch
from data_paths import SHARED

from hjtranslate import data

FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte"]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_load_both_datasets(shared_data: Path, name: str, split: str, n: int) -> None:
    x, y = data.load_dataset(name, split)
    assert x.shape == (n, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (n,) and y.dtype == torch.int64
    assert set(y.unique().tolist()) == set(range(10))
    assert 20 < x.float().mean() < 100  # grey images, not all-zero or noise


def test_known_first_labels(shared_data: Path) -> None:
    assert data.load_dataset("mnist", "test")[1][:5].tolist() == [7, 2, 1, 0, 4]
    assert data.load_dataset("fashion-mnist", "test")[1][:5].tolist() == [9, 2, 1, 1, 6]


def test_argument_beats_env(shared_data: Path, tmp_path: Path) -> None:
    assert data.resolve_data_dir() == shared_data
    assert data.resolve_data_dir(tmp_path) == tmp_path
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        data.resolve_data_dir(tmp_path / "nope")


def test_plain_idx_and_torchvision_layout(shared_data: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain" / "mnist"
    plain.mkdir(parents=True)
    for stem in FILES[2:]:
        with gzip.open(shared_data / "mnist" / f"{stem}.gz") as f:
            (plain / stem).write_bytes(f.read())
    ref_x, ref_y = data.load_dataset("mnist", "test")
    x, y = data.load_dataset("mnist", "test", data_dir=tmp_path / "plain")
    assert torch.equal(x, ref_x) and torch.equal(y, ref_y)

    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for stem in FILES[2:]:
        shutil.copy(shared_data / "fashion-mnist" / f"{stem}.gz", raw)
    x, _ = data.load_dataset("fashion-mnist", "test", data_dir=tmp_path / "tv")
    assert torch.equal(x, data.load_dataset("fashion-mnist", "test")[0])


def _folder_with(tmp_path: Path, images_bytes: bytes) -> Path:
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(images_bytes)
    shutil.copy(SHARED / "mnist" / "t10k-labels-idx1-ubyte.gz", folder)
    return tmp_path


def test_truncated_gzip_is_a_clear_error(shared_data: Path, tmp_path: Path) -> None:
    good = (shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()
    root = _folder_with(tmp_path, good[: len(good) // 3])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz.*(gzip|truncated)"):
        data.load_dataset("mnist", "test", data_dir=root)


def test_a_gzip_file_without_its_suffix_is_read(shared_data: Path, tmp_path: Path) -> None:
    """Saved as t10k-images-idx3-ubyte but still compressed: it was "not an IDX file"."""
    good = data.load_dataset("mnist", "test", data_dir=shared_data)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(shared_data / "mnist" / f"{stem}.gz", folder / stem)
    again = data.load_dataset("mnist", "test", data_dir=tmp_path)
    assert torch.equal(again[0], good[0]) and torch.equal(again[1], good[1])


def test_short_payload_and_bad_magic(shared_data: Path, tmp_path: Path) -> None:
    with gzip.open(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        content = f.read()
    root = _folder_with(tmp_path, gzip.compress(content[:-500], compresslevel=1))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        data.load_dataset("mnist", "test", data_dir=root)
    bad_magic = gzip.compress(b"\x00\x00\x09\x03" + content[4:], compresslevel=1)
    (root / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(bad_magic)
    with pytest.raises(ValueError, match="magic number"):
        data.load_dataset("mnist", "test", data_dir=root)


def test_missing_files_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HJT_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz") as err:
        data.load_dataset("mnist", "test")
    assert str(tmp_path / "mnist") in str(err.value) and "download=True" in str(err.value)
    with pytest.raises(FileNotFoundError, match="HJT_DATA_DIR"):
        monkeypatch.setenv("HJT_DATA_DIR", str(tmp_path / "missing"))
        data.load_dataset("fashion-mnist", "train")


def test_the_debian_folder_is_looked_in_last(shared_data: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # where `dpkg -c dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb` lists the files
    assert data.DEBIAN_FASHION_DIRS == [Path("/usr/share/datasets/fashion-mnist")]
    debian = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    debian.mkdir(parents=True)
    for f in FILES:  # MNIST's files in the Debian folder: its labels say where a load came from
        (debian / f"{f}.gz").symlink_to(shared_data / "mnist" / f"{f}.gz")
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIRS", [debian])
    data._cache.clear()
    # HJT_DATA_DIR's Fashion-MNIST comes first ...
    assert data.load_dataset("fashion-mnist", "test")[1][:5].tolist() == [9, 2, 1, 1, 6]
    # ... and the Debian folder is read where nothing else holds it
    monkeypatch.setenv("HJT_DATA_DIR", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    assert data.load_dataset("fashion-mnist", "test")[1][:5].tolist() == [7, 2, 1, 0, 4]
    with pytest.raises(FileNotFoundError):  # MNIST is not in the package
        data.load_dataset("mnist", "test")


def test_a_download_that_fails_is_a_message_and_a_new_folder_is_made_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline, torchvision's download raises after trying every mirror: one message that says
    what to do instead; a data folder named for the download is created, not refused."""
    from torchvision import datasets

    def offline(root, train=True, download=False):
        assert Path(root).is_dir() and download
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried "
                           "https://ossci-datasets.s3.amazonaws.com/mnist/, got:\n<urlopen error>")

    monkeypatch.setattr(datasets, "MNIST", offline)
    monkeypatch.setenv("HJT_DATA_DIR", str(tmp_path / "new" / "data"))
    with pytest.raises(FileNotFoundError, match=r"Could not download mnist into .*new/data: Error "
                       r"downloading train-images-idx3-ubyte.gz\. Without internet access, put "
                       r"the four IDX \.gz files of mnist in .*new/data/mnist"):
        data.load_dataset("mnist", "train", download=True)
    assert (tmp_path / "new" / "data").is_dir()


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match="Unknown dataset"):
        data.load_dataset("cifar10", "train")
    with pytest.raises(ValueError, match="Unknown split"):
        data.load_dataset("mnist", "valid")


def test_a_folder_of_one_dataset_is_not_read_as_both(shared_data: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """MNIST's and Fashion-MNIST's files have the same names: a folder holding them directly is
    the dataset its name says, and the other one is not found there (it was read as both, and a
    run trained digits to digits); a file that cannot be read is not called corrupt."""
    digits = tmp_path / "mnist"
    shutil.copytree(shared_data / "mnist", digits)
    assert len(data.load_dataset("mnist", "test", data_dir=digits)[0]) == 10_000
    with pytest.raises(FileNotFoundError, match="holds the files itself, which count as mnist's"):
        data.load_dataset("fashion-mnist", "test", data_dir=digits)
    clothes = tmp_path / "FashionMNIST-files"
    shutil.copytree(shared_data / "fashion-mnist", clothes)
    x, _ = data.load_dataset("fashion-mnist", "test", data_dir=clothes)
    assert torch.equal(x, data.load_dataset("fashion-mnist", "test", data_dir=shared_data)[0])
    with pytest.raises(FileNotFoundError, match="count as fashion-mnist's"):
        data.load_dataset("mnist", "test", data_dir=clothes)
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"  # torchvision's folder, named directly
    shutil.copytree(shared_data / "fashion-mnist", raw)
    assert torch.equal(data.load_dataset("fashion-mnist", "test", data_dir=raw)[0], x)
    (tmp_path / "fashion-link").symlink_to(digits)  # a link's own name counts too
    assert data.names_fashion(tmp_path / "fashion-link") and not data.names_fashion(digits)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
        data.resolve_data_dir(tmp_path / "afile")

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    data._cache.clear()
    monkeypatch.setattr(Path, "read_bytes", unreadable)
    with pytest.raises(ValueError, match="Permission denied. Check that this process may read it"):
        data.load_dataset("mnist", "train", data_dir=digits)
