"""A training run on an image list end to end: DataLoader workers decode files with torchvision,
two views for the contrastive stream, per-class evaluation on the validation list."""

from __future__ import annotations

import json

import torch
from torchvision.io import write_png

from hybridlt.sweep.build import build_run
from hybridlt.sweep.config import load_run_config


def _write_images(tmp_path, counts, tag):
    rows = []
    g = torch.Generator().manual_seed(len(tag))
    for label, n in enumerate(counts):
        for i in range(n):
            path = tmp_path / "img" / tag / f"{label}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = (torch.rand(3, 40, 48, generator=g) * 60 + label * 60).to(torch.uint8)  # class-coloured
            write_png(image, str(path))
            rows.append((f"img/{tag}/{label}_{i}.png", label))
    return rows


def test_image_list_run_trains_and_evaluates(tmp_path):
    train = _write_images(tmp_path, [12, 6, 3], "train")
    val = _write_images(tmp_path, [4, 4, 4], "val")
    (tmp_path / "train.txt").write_text("".join(f"{p} {y}\n" for p, y in train))
    doc = {"images": [{"id": i, "file_name": p} for i, (p, _) in enumerate(val)],
           "annotations": [{"image_id": i, "category_id": y} for i, (_, y) in enumerate(val)],
           "categories": [{"id": c, "name": f"species_{c}"} for c in range(3)]}
    (tmp_path / "val.json").write_text(json.dumps(doc))
    cfg = load_run_config(None, [
        "data.dataset=image_list", f"data.root={tmp_path}", f"data.train_list={tmp_path / 'train.txt'}",
        f"data.val_list={tmp_path / 'val.json'}", "data.image_size=32", "data.loader_workers=2",
        "data.many_above=10", "data.few_below=5", "model.backbone=resnet8", "model.proj_dim=16",
        "train.epochs=2", "train.batch_size=8", "train.eval_batch_size=6", "train.device=cpu",
        "optim.lr=0.05", "optim.milestones=[]", "sampler.contrastive=positives", "sampler.positives=1",
    ])
    parts = build_run(cfg)
    assert parts.class_counts == [12, 6, 3]
    assert parts.groups == {"many": [0], "medium": [1], "few": [2]}
    seen = []
    metrics = parts.trainer.fit(lambda m, c: seen.append(m))
    assert [m["epoch"] for m in seen] == [1, 2]
    assert metrics["steps"] == 3  # ceil(21 / 8) steps a stream
    assert len(metrics["per_class_acc"]) == 3 and all(0 <= a <= 1 for a in metrics["per_class_acc"])
    assert metrics["data_wait_s"] > 0
