"""Image listing, labels CSV / folder-per-class, the TF-slim 1001 offset, decoding once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeq import images as data
from edgeq.errors import BadInputError
from edgeq.images import inception_preprocess


def _image(path: Path, value: int = 100, size: tuple[int, int] = (20, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


@pytest.mark.parametrize(("outputs", "labels", "offset"), [
    (1001, [0, 5, 999], 1),  # TF-slim: background at 0
    (1001, [1, 1000], 0),  # labels already 1..1000
    (1000, [0, 999], 0),
    (10, [0, 9], 0),
])
def test_label_offset(outputs: int, labels: list[int], offset: int) -> None:
    assert data.label_offset(outputs, labels) == offset


def test_label_offset_out_of_range() -> None:
    with pytest.raises(BadInputError, match="10 outputs"):
        data.label_offset(10, [0, 12])


def test_csv_with_header_and_relative_paths(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png")
    _image(tmp_path / "images" / "b.png")
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\nimages/b.png,3\nimages/a.png,1\n")
    images = data.list_images(tmp_path / "images", csv)
    assert [p.name for p in images.paths] == ["b.png", "a.png"] and images.labels == (3, 1)
    assert len(images.head(1)) == 1 and images.head(1).labels == (3,)


def test_csv_errors(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\na.png,cat\n")
    with pytest.raises(BadInputError, match="integer label"):
        data.list_images(tmp_path, bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("file,label\nnothere.png,1\n")
    with pytest.raises(BadInputError, match="'nothere.png' not found"):
        data.list_images(tmp_path, missing)
    with pytest.raises(BadInputError, match="no such labels file"):
        data.list_images(tmp_path, tmp_path / "absent.csv")


def test_folder_per_class_and_plain_folder(tmp_path: Path) -> None:
    _image(tmp_path / "cls" / "dog" / "1.png")
    _image(tmp_path / "cls" / "cat" / "2.png")
    images = data.list_images(tmp_path / "cls")
    assert images.class_names == ("cat", "dog") and images.labels == (0, 1)
    assert [p.parent.name for p in images.paths] == ["cat", "dog"]
    _image(tmp_path / "flat" / "x.jpg")
    assert data.list_images(tmp_path / "flat").labels is None


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(BadInputError, match="no images found"):
        data.list_images(tmp_path / "empty")
    with pytest.raises(BadInputError, match="no such data folder"):
        data.list_images(tmp_path / "absent")


def test_decode_once_matches_preprocess(tmp_path: Path) -> None:
    paths = [_image(tmp_path / f"{i}.png", value=i * 40) for i in range(4)]
    spec = inception_preprocess(8)
    pixels = data.decode_images(paths, spec, workers=2)
    assert pixels.shape == (4, 8, 8, 3) and pixels.dtype == np.uint8
    for i, path in enumerate(paths):
        assert np.array_equal(pixels[i], spec.load_pixels(path))
    assert data.image_sizes(paths) == [(20, 10)] * 4
