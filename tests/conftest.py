"""Shared fixtures: tiny digits-LT configs that train in seconds on a CPU."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch

from hybridlt.sweep.config import load_run_config

torch.set_num_threads(2)

TINY = [
    "data.dataset=digits_lt", "data.imbalance_ratio=10", "data.max_count=60", "data.test_per_class=20",
    "data.many_above=40", "data.few_below=15", "augment.crop_padding=1", "augment.flip=false",
    "model.backbone=resnet8", "model.proj_dim=32", "optim.lr=0.1", "optim.schedule=cosine",
    "optim.milestones=[]", "optim.warmup_epochs=0", "train.epochs=2", "train.batch_size=64", "train.device=cpu",
]


@pytest.fixture
def tiny_cfg():
    """A function returning a 2-epoch digits-LT RunConfig with extra ``--set`` overrides."""
    return lambda *overrides: load_run_config(None, [*TINY, *overrides])


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_TRAIN_PER_CLASS, CIFAR_TEST_PER_CLASS = 40, 20


def shared_archive() -> Path | None:
    """``shared/datasets/cifar10-jpeg.tar.gz`` beside the repository root or one of its parents."""
    for folder in Path(__file__).resolve().parents[2:]:
        path = folder / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory):
    """A few hundred CIFAR-10 JPEGs in the ImageFolder layout, straight out of the archive."""
    archive = shared_archive()
    if archive is None:
        pytest.skip("../shared/datasets/cifar10-jpeg.tar.gz not found (it sits beside the repository in CI; "
                    "a user's checkout has none)")
    root = tmp_path_factory.mktemp("cifar10-jpeg")
    per_split = (("train", CIFAR_TRAIN_PER_CLASS), ("test", CIFAR_TEST_PER_CLASS))
    wanted = {f"{split}/{c}/{i:04d}.jpg" for split, n in per_split for c in CIFAR_CLASSES for i in range(n)}
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar if m.isfile() and m.name.removeprefix("./") in wanted]
        tar.extractall(root, members=members, filter="data")
    assert len(members) == len(wanted)
    return root
