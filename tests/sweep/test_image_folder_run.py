"""A run on real CIFAR-10 JPEGs (from the shared archive): it learns far above chance, the folder's
class names reach the store, a second run reads the decoded cache without decoding a file."""

from __future__ import annotations

import shutil

import hybridlt
from hybridlt.data import image_folder as F
from hybridlt.sweep.results import read_dataset

CLASSES = ["airplane", "automobile", "frog", "ship"]  # four of the ten: a CPU test of seconds, chance 25%


def test_real_images_train_above_chance_and_names_reach_the_store(cifar_folder, tmp_path, monkeypatch):
    root = tmp_path / "four"
    for split in ("train", "test"):
        for name in CLASSES:
            shutil.copytree(cifar_folder / split / name, root / split / name)
    decodes = []
    real = F.decode_rgb
    monkeypatch.setattr(F, "decode_rgb", lambda path, *a: decodes.append(path) or real(path, *a))
    sets = [f"data.root={root}", "data.dataset=image_folder", "data.imbalance_ratio=1",
            f"data.cache_dir={tmp_path / 'cache'}", "data.many_above=30", "data.few_below=10",
            "model.backbone=resnet8", "optim.lr=0.1", "optim.milestones=[]", "optim.schedule=cosine",
            "train.epochs=12", "train.batch_size=32", "train.device=cpu"]
    result = hybridlt.train(None, sets, out=tmp_path / "run")
    assert len(decodes) == 4 * (40 + 20)  # every train and test image, decoded once
    assert result.class_names == CLASSES
    assert result.metrics["acc"] >= 0.45  # 80 balanced test images of 4 classes; 55% measured
    per_class = read_dataset(tmp_path / "run", "per_class").to_pandas()
    last = per_class[per_class["epoch"] == per_class["epoch"].max()].sort_values("class_index")
    assert last["class_name"].tolist() == CLASSES and last["train_count"].tolist() == [40] * 4

    again = hybridlt.train(None, [*sets, "train.epochs=1"], out=tmp_path / "run2")
    assert len(decodes) == 240 and again.class_names == CLASSES  # read from the cache, no JPEG decoded
