"""Image lists (text and iNaturalist JSON) on real PNG / JPEG files, their errors and transforms."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.io import write_jpeg, write_png

from hybridlt.data.image_list import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageListDataset,
    ImageListError,
    TwoViews,
    eval_transform,
    load_image_lists,
    read_image_list,
    train_transform,
)

# (relative path, label, channels, height, width, fill)
TRAIN = [("imgs/cat/a.png", 0, 3, 20, 24, 10), ("imgs/cat/b.jpg", 0, 3, 18, 18, 200),
         ("imgs/dog/c.png", 1, 1, 16, 20, 90), ("imgs/dog/d e.png", 1, 3, 22, 16, 30),
         ("imgs/owl/f.png", 2, 3, 16, 16, 150)]
VAL = [("val/g.png", 2, 3, 17, 19, 60), ("val/h.jpg", 0, 3, 16, 16, 120)]


def _write(root, rel, channels, h, w, fill):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    img = torch.full((channels, h, w), fill, dtype=torch.uint8)
    img[:, : h // 2, : w // 2] = 255 - fill  # not constant, so crops differ
    if rel.endswith(".jpg"):
        write_jpeg(img, str(path), quality=95)
    else:
        write_png(img, str(path))
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    for row in TRAIN + VAL:
        _write(root, *row[:1], *row[2:])
    return root


def _text_list(path, rows, header="# path label\n\n"):
    path.write_text(header + "".join(f"{rel} {label}\n" for rel, label, *_ in rows))
    return path


def test_text_lists(tree, tmp_path):
    train = _text_list(tmp_path / "train.txt", TRAIN)
    val = _text_list(tmp_path / "val.txt", VAL)
    data = load_image_lists(train, val, tree)
    assert data.num_classes == 3 and data.class_names == ["0", "1", "2"] and data.in_channels == 3
    assert data.train_labels.tolist() == [0, 0, 1, 1, 2] and data.train_labels.dtype == torch.long
    assert data.test_labels.tolist() == [2, 0]
    assert [p.relative_to(tree.resolve()).as_posix() for p in data.train.paths] == [r[0] for r in TRAIN]
    assert len(data.train) == 5 and len(data.test) == 2
    image, label = data.train[3]  # "d e.png": a path with a space
    assert label == 1 and image.shape == (3, 22, 16) and image.dtype == torch.uint8
    image, label = data.test[1]
    assert label == 0 and image.shape == (3, 16, 16)


def test_pngs_decode_exactly_and_grayscale_becomes_rgb(tree, tmp_path):
    data = load_image_lists(_text_list(tmp_path / "t.txt", TRAIN), _text_list(tmp_path / "v.txt", VAL), tree)
    rgb, _ = data.train[0]
    assert rgb.shape == (3, 20, 24)
    assert rgb[:, 0, 0].tolist() == [245] * 3 and rgb[:, -1, -1].tolist() == [10] * 3
    gray, _ = data.train[2]  # written with one channel
    assert gray.shape == (3, 16, 20)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert gray[0, 0, 0].item() == 165 and gray[0, -1, -1].item() == 90
    jpeg, _ = data.train[1]
    assert jpeg.shape == (3, 18, 18) and abs(int(jpeg[0, -1, -1]) - 200) < 8


def _inat(path, rows, categories=None, offset=0):
    images = [{"id": 1000 + offset + i, "file_name": rel, "width": w, "height": h}
              for i, (rel, _, _, h, w, _) in enumerate(rows)]
    annotations = [{"id": i, "image_id": 1000 + offset + i, "category_id": label}
                   for i, (_, label, *_) in enumerate(rows)]
    doc = {"info": {}, "images": images, "annotations": annotations, "licenses": []}
    if categories is not None:
        doc["categories"] = categories
    path.write_text(json.dumps(doc))
    return path


def test_inat_json(tree, tmp_path):
    cats = [{"id": 2, "name": "Bubo"}, {"id": 0, "name": "Felis"}, {"id": 1, "name": "Canis", "kingdom": "x"}]
    train = _inat(tmp_path / "train2018.json", TRAIN, cats)
    val = _inat(tmp_path / "val2018.json", VAL, cats, offset=100)
    data = load_image_lists(train, val, tree)
    assert data.class_names == ["Felis", "Canis", "Bubo"]
    assert data.train_labels.tolist() == [0, 0, 1, 1, 2] and data.test_labels.tolist() == [2, 0]
    assert data.test.paths[0] == (tree / "val/g.png").resolve()
    assert data.test[0][0].shape == (3, 17, 19)


def test_inat_json_without_categories_names_by_id(tree, tmp_path):
    data = load_image_lists(_inat(tmp_path / "t.json", TRAIN), _inat(tmp_path / "v.json", VAL), tree)
    assert data.class_names == ["0", "1", "2"]


def test_mixed_json_train_and_text_val(tree, tmp_path):
    data = load_image_lists(_inat(tmp_path / "t.json", TRAIN, [{"id": 0, "name": "z"}]),
                            _text_list(tmp_path / "v.txt", VAL), tree)
    assert data.class_names == ["z", "1", "2"]


def _error(train, val, root, check_files=True) -> str:
    with pytest.raises(ImageListError) as err:
        load_image_lists(train, val, root, check_files=check_files)
    return str(err.value)


def test_missing_list_file(tree, tmp_path):
    val = _text_list(tmp_path / "val.txt", VAL)
    msg = _error(tmp_path / "nope.txt", val, tree)
    assert str(tmp_path / "nope.txt") in msg and "not found" in msg
    msg = _error(_text_list(tmp_path / "train.txt", TRAIN), tmp_path / "nope.json", tree)
    assert str(tmp_path / "nope.json") in msg


def test_missing_image_file(tree, tmp_path):
    rows = [*TRAIN, ("imgs/owl/missing.png", 2, 3, 16, 16, 0)]
    train = _text_list(tmp_path / "train.txt", rows)
    val = _text_list(tmp_path / "val.txt", VAL)
    msg = _error(train, val, tree)
    assert str((tree / "imgs/owl/missing.png").resolve()) in msg
    # without the file check the lists load, and decoding names the file
    data = load_image_lists(train, val, tree, check_files=False)
    with pytest.raises(ImageListError, match="missing.png"):
        data.train[5]


def test_undecodable_image_names_the_file(tree, tmp_path):
    (tree / "imgs/cat/a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    ds = ImageListDataset([tree / "imgs/cat/a.png"], [0])
    with pytest.raises(ImageListError, match="a.png"):
        ds[0]


def test_val_label_unknown_to_train(tree, tmp_path):
    train = _text_list(tmp_path / "train.txt", TRAIN)
    val = _text_list(tmp_path / "val.txt", [*VAL, ("val/g.png", 3, 0, 0, 0, 0)])
    msg = _error(train, val, tree)
    assert str(val) in msg and "label 3" in msg and "0 .. 2" in msg
    val = _text_list(tmp_path / "val.txt", [("val/g.png", -1, 0, 0, 0, 0)])
    assert "-1" in _error(train, val, tree)


def test_empty_class_gap_in_labels(tree, tmp_path):
    rows = [r for r in TRAIN if r[1] != 1]  # labels 0 and 2: class 1 empty
    train = _text_list(tmp_path / "train.txt", rows)
    msg = _error(train, _text_list(tmp_path / "val.txt", VAL), tree)
    assert str(train) in msg and "class 1" in msg


def test_empty_train_list(tree, tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("# nothing here\n\n")
    msg = _error(train, _text_list(tmp_path / "val.txt", VAL), tree)
    assert str(train) in msg and "no images" in msg


@pytest.mark.parametrize("bad", ["imgs/cat/a.png", "imgs/cat/a.png zero", "5", "imgs/cat/a.png 1.0",
                                 "imgs/cat/a.png --1", "imgs/cat/a.png \u00b2", "imgs/cat/a.png -2"])
def test_malformed_line_names_file_and_line(tree, tmp_path, bad):
    train = tmp_path / "train.txt"
    train.write_text("# header\nimgs/cat/a.png 0\n\n" + bad + "\nimgs/dog/c.png 1\n")
    msg = _error(train, _text_list(tmp_path / "val.txt", VAL[1:]), tree)
    assert f"{train}:4" in msg


@pytest.mark.parametrize("rel", ["../x.png", "imgs/../../x.png", "/etc/passwd"])
def test_path_escaping_root(tree, tmp_path, rel):
    (tmp_path / "x.png").write_bytes(b"")
    train = tmp_path / "train.txt"
    train.write_text(f"imgs/cat/a.png 0\n{rel} 0\n")
    msg = _error(train, _text_list(tmp_path / "val.txt", VAL[1:]), tree, check_files=False)
    assert f"{train}:2" in msg and repr(rel) in msg and "outside" in msg


def test_path_escaping_root_in_json(tree, tmp_path):
    train = _inat(tmp_path / "t.json", [*TRAIN, ("../x.png", 0, 3, 1, 1, 0)])
    msg = _error(train, _text_list(tmp_path / "v.txt", VAL), tree, check_files=False)
    assert str(train) in msg and "'../x.png'" in msg


def test_dotdot_inside_root_is_fine(tree, tmp_path):
    train = _text_list(tmp_path / "train.txt", [("imgs/dog/../cat/a.png", 0, 3, 1, 1, 0)])
    paths, labels, names = read_image_list(train, tree)
    assert paths == [(tree / "imgs/cat/a.png").resolve()] and labels == [0] and names == {}


@pytest.mark.parametrize("doc", ["{not json", '{"images": []}', '{"images": [{"id": 1}], "annotations": []}',
                                 '{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 2, '
                                 '"category_id": 0}]}',
                                 '{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, '
                                 '"category_id": "owl"}]}',
                                 '[1, 2]'])
def test_malformed_json_names_the_file(tree, tmp_path, doc):
    train = tmp_path / "train.json"
    train.write_text(doc)
    msg = _error(train, _text_list(tmp_path / "v.txt", VAL), tree)
    assert str(train) in msg


def test_negative_category_in_json(tree, tmp_path):
    rows = [*TRAIN, ("imgs/owl/f.png", -1, 3, 16, 16, 0)]
    train = _inat(tmp_path / "t.json", rows)
    msg = _error(train, _text_list(tmp_path / "v.txt", VAL), tree)
    assert str(train) in msg and "-1" in msg


def test_train_transform_two_views_and_eval_shapes(tree, tmp_path):
    data = load_image_lists(_text_list(tmp_path / "t.txt", TRAIN), _text_list(tmp_path / "v.txt", VAL), tree)
    torch.manual_seed(0)
    data.train.transform = TwoViews(train_transform(12, (0.4, 0.4, 0.4, 0.1)), train_transform(12, None))
    for i in range(len(data.train)):  # different sizes, one grayscale file
        views, label = data.train[i]
        assert views.shape == (2, 3, 12, 12) and views.dtype == torch.float32
        assert label == TRAIN[i][1]
    loader = torch.utils.data.DataLoader(data.train, batch_size=5)
    x, y = next(iter(loader))
    assert x.shape == (5, 2, 3, 12, 12) and y.tolist() == [0, 0, 1, 1, 2]

    data.test.transform = eval_transform(12)
    image, _ = data.test[0]
    assert image.shape == (3, 12, 12) and image.dtype == torch.float32


def test_eval_transform_normalises_with_imagenet_stats():
    image = torch.full((3, 40, 30), 128, dtype=torch.uint8)
    out = eval_transform(16)(image)
    assert out.shape == (3, 16, 16)
    for c in range(3):
        expected = (128 / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(out[c], torch.full((16, 16), expected), atol=1e-5, rtol=0)


def test_eval_transform_is_a_center_crop_of_the_resize():
    # Resize(round(16 / 0.875) = 18) on the short side, then the central 16 x 16
    image = torch.zeros((3, 18, 18), dtype=torch.uint8)
    image[:, 1:17, 1:17] = 255  # the central 16 x 16 is white, the 1-pixel border black
    out = eval_transform(16)(image)
    torch.testing.assert_close(out[0], torch.full((16, 16), (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]))


def test_train_transform_without_randomness_is_only_normalisation():
    image = torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    t = train_transform(12, None, grayscale_p=0.0, flip=False)
    torch.manual_seed(0)
    out = t(image)
    # RandomResizedCrop picks a random box; the output is 12 x 12 and within the normalised range
    assert out.shape == (3, 12, 12)
    lo = [(0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    hi = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    for c in range(3):
        assert out[c].min() >= lo[c] - 1e-4 and out[c].max() <= hi[c] + 1e-4
    gray = train_transform(12, None, grayscale_p=1.0)(image)
    raw = gray * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    torch.testing.assert_close(raw[0], raw[1], atol=1e-5, rtol=0)
    torch.testing.assert_close(raw[1], raw[2], atol=1e-5, rtol=0)


def test_jpeg_decoding_sized_to_the_crop(tmp_path):
    """A 256x192 JPEG decoded for 64-pixel crops comes out at 1/2 scale (the smallest DCT scale whose
    shorter side still covers 64 is 1/2: 128x96), full size without a decode size."""
    import torch
    from torchvision.io import write_jpeg

    from hybridlt.data.image_list import decode_rgb

    path = tmp_path / "big.jpg"
    write_jpeg(torch.full((3, 192, 256), 128, dtype=torch.uint8), str(path))
    assert tuple(decode_rgb(path).shape) == (3, 192, 256)
    assert tuple(decode_rgb(path, 64).shape) == (3, 96, 128)
    assert tuple(decode_rgb(path, 100).shape) == (3, 192, 256)  # 1/2 would give 96 < 100
