"""Shared fixtures: tiny digits-LT configs that train in seconds on a CPU."""

from __future__ import annotations

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
