"""One hybrid training step (two contrastive views + the classifier batch), images per second:
this project's path vs a reference built the conventional way.

Ours: uint8 data on the device, batched augmentation there, one backbone forward over both
views and the classifier batch, bf16 autocast + channels_last on CUDA, fused SGD.
Reference: PIL images through per-sample torchvision transforms in a DataLoader (enough workers,
pinned memory, non-blocking copies), a separate backbone forward per view and for the classifier
batch; on CUDA it gets the same bf16 autocast and channels_last, and foreach SGD everywhere: the
conventional pipeline done well, so the ratio measures the data path and the fused forward.

    python bench/step.py                       # reduced sizes on this CPU
    python bench/step.py --device cuda --full  # the paper's sizes: ResNet-32 32x32 b512, ResNet-50 224x224 b100
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from common import device_name, sync, write_table
from PIL import Image
from torchvision import transforms as T

from hybridlt.data.augment import BatchAugment
from hybridlt.model.hybrid import HybridObjective, create_hybrid_net
from hybridlt.model.losses import CrossEntropy, SupConLoss
from hybridlt.model.optim import build_optimizer

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
RESNET50_FWD_GFLOP_224 = 4.1  # multiply-adds x 2 at 224x224; forward + backward ~ 3x forward


class ThreeViews(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int):
        self.images, self.labels = images, labels
        base = [T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()]
        tail = [T.RandomGrayscale(0.2), T.ToTensor(), T.Normalize(MEAN, STD)]
        self.jitter = T.Compose([*base, T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), *tail])
        self.plain = T.Compose([*base, *tail])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i])
        return self.jitter(img), self.plain(img), self.plain(img), int(self.labels[i])


def bench_case(backbone: str, size: int, batch: int, classes: int, steps: int, device: torch.device,
               workers: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    n = batch * (steps + 3)
    hwc = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, classes, size=n)
    cuda = device.type == "cuda"

    def build(fast: bool):
        torch.manual_seed(0)
        net = create_hybrid_net(backbone, classes)
        obj = HybridObjective(net, SupConLoss(0.1), CrossEntropy([1] * classes, 1)).to(device)
        if cuda:
            obj = obj.to(memory_format=torch.channels_last)
        opt = build_optimizer(obj, 0.1) if fast else torch.optim.SGD(obj.parameters(), lr=0.1, momentum=0.9,
                                                                       weight_decay=1e-4, foreach=True)
        return obj, opt

    # ours
    obj, opt = build(True)
    images = torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous().to(device)
    y_all = torch.from_numpy(labels).to(device)
    augment = BatchAugment(MEAN, STD, crop_padding=size // 8)
    gen = torch.Generator(device=device).manual_seed(0)

    def our_step(i):
        idx = torch.arange(i * batch, (i + 1) * batch, device=device)
        ce_idx = idx.flip(0)
        x, y = images[idx], y_all[idx]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss, _, _ = obj(augment.two_views(x, gen), y, augment(images[ce_idx], gen), y_all[ce_idx], 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(3):
        our_step(i)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        our_step(i)
    sync(device)
    ours = steps * 3 * batch / (time.perf_counter() - start)

    # reference
    obj, opt = build(False)
    loader = torch.utils.data.DataLoader(ThreeViews(hwc, labels, size), batch_size=batch, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0,
                                         pin_memory=cuda, prefetch_factor=4 if workers else None)
    net, supcon, ce = obj.net, SupConLoss(0.1), torch.nn.CrossEntropyLoss()
    fmt = torch.channels_last if cuda else torch.contiguous_format

    def ref_step(v1, v2, xc, y):
        v1, v2, xc = (t.to(device, non_blocking=cuda, memory_format=fmt) for t in (v1, v2, xc))
        y = y.to(device, non_blocking=cuda)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            z = torch.stack([net.embed(net.backbone(v1)), net.embed(net.backbone(v2))], 1)
            loss = 0.5 * supcon(z, y) + 0.5 * ce(net.classifier(net.backbone(xc)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    it = iter(loader)
    for _ in range(3):
        ref_step(*next(it))
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        ref_step(*next(it))
    sync(device)
    reference = steps * 3 * batch / (time.perf_counter() - start)
    return ours, reference


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--full", action="store_true", help="the paper's sizes (for a GPU)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    workers = args.workers if args.workers is not None else max(2, min(16, (os.cpu_count() or 2) - 1))
    steps = args.steps or 50
    if args.full:
        cases = [("resnet32", 32, 512, 100), ("resnet50", 224, 100, 1000)]
    else:
        cases = [("resnet32", 32, 64, 100), ("resnet50", 64, 16, 1000)]
    rows, notes = [], []
    for backbone, size, batch, classes in cases:
        ours, ref = bench_case(backbone, size, batch, classes, steps, device, workers)
        rows.append([backbone, f"{size}x{size}", batch, f"{ref:,.0f}", f"{ours:,.0f}", f"{ours / ref:.2f}"])
        if device.type == "cuda" and backbone == "resnet50":
            peak = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
            name = torch.cuda.get_device_name(device)
            rate = next((v for k, v in peak.items() if k in name), None)
            flops = ours * 3 * RESNET50_FWD_GFLOP_224 * 1e9 * (size / 224) ** 2
            if rate:
                notes.append(f"ResNet-50 achieved {flops / 1e12:.0f} TFLOP/s = {100 * flops / rate:.1f}% of the "
                             f"{name}'s dense bf16 peak ({rate / 1e12:.0f} TFLOP/s).")
    notes.insert(0, f"images/s counts every image through the backbone (2 views + the classifier batch per sample); "
                    f"{steps} timed steps after 3 warm-up steps; reference: DataLoader with {workers} workers, pinned "
                    f"memory, foreach SGD{', bf16 autocast and channels_last' if device.type == 'cuda' else ''}.")
    write_table(f"step_{device.type}{'_full' if args.full else ''}", f"Hybrid training step on {device_name(device)}",
                ["backbone", "input", "batch", "reference img/s", "hybridlt img/s", "speed-up"], rows, notes)


if __name__ == "__main__":
    main()
