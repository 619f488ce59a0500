"""An image folder's two paths on the CIFAR-10 JPEG folder, in one run: the decode-once cost of the
in-memory cache, a load that reuses it, and the epoch time of the in-memory fast path (uint8 tensors,
batched augmentation) against the DataLoader path (JPEG decode + torchvision transforms in workers),
each as data only (iterate both streams) and as training (ResNet-8 hybrid step, SupCon + CE).

    tar -xzf ../shared/datasets/cifar10-jpeg.tar.gz -C /tmp/cifar10-jpeg
    python bench/image_folder.py --root /tmp/cifar10-jpeg [--epochs 3] [--workers 2] [--max-count 500]

Training set: CIFAR-10-LT ratio 100 with ``--max-count`` images in the largest class; medians over
``--epochs`` epochs after one untimed warm-up epoch.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

import torch
from common import device_name, write_table

from hybridlt.data import image_folder as F
from hybridlt.data.samplers import create_sampler
from hybridlt.model.hybrid import HybridObjective, create_hybrid_net
from hybridlt.model.losses import CrossEntropy, SupConLoss
from hybridlt.model.optim import build_optimizer

AUGMENT = dict(crop_padding=4, flip=True, grayscale_p=0.2, jitter=[0.4, 0.4, 0.4, 0.1], jitter_p=0.8)


def _streams(data, batch, workers, device):
    labels = data.train_labels.numpy()
    con, ce = (create_sampler(kind, labels, batch, seed=0, salt=salt)
               for kind, salt in (("random", 1), ("class_balanced", 2)))
    return data.train_streams(con, ce, seed=0, device=device, batch_size=batch, world_size=1, augment=AUGMENT,
                              image_size=32, loader_workers=workers)


def _epoch_times(streams, epochs, step=None):
    times = []
    for e in range(epochs + 1):
        start = time.perf_counter()
        for batch in streams.epoch(e):
            if step is not None:
                step(*batch)
        if e:  # epoch 0 warms up (workers start, caches fill)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _trainer(num_classes, counts, device):
    torch.manual_seed(0)
    obj = HybridObjective(create_hybrid_net("resnet8", num_classes, 3), SupConLoss(0.1, num_classes),
                          CrossEntropy(counts, 10)).to(device)
    opt = build_optimizer(obj, 0.1, 0.9, 5e-4, False)

    def step(cx, cy, ex, ey):
        loss, _, _ = obj(cx, cy, ex, ey, 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-count", type=int, default=500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    cache = tempfile.mkdtemp(prefix="hybridlt-bench-cache-")
    try:
        start = time.perf_counter()
        F.load_image_folder(args.root, 1, cache_dir=cache)
        decode_s = time.perf_counter() - start
        decoded = F.STATS["decoded"]
        start = time.perf_counter()
        fast = F.load_image_folder(args.root, 100, "exp", args.max_count, 0, cache_dir=cache)
        reuse_s = time.perf_counter() - start
        assert F.STATS["decoded"] == decoded, "the second load decoded files"
        slow = F.load_image_folder(args.root, 100, "exp", args.max_count, 0, memory_max_size=0)
        counts = torch.bincount(fast.train_labels, minlength=10).tolist()
        rows = []
        for what, stepper in (("data only", None), ("training step", "train")):
            t_fast = _epoch_times(_streams(fast, args.batch, args.workers, device), args.epochs,
                                  _trainer(10, counts, device) if stepper else None)
            t_slow = _epoch_times(_streams(slow, args.batch, args.workers, device), args.epochs,
                                  _trainer(10, counts, device) if stepper else None)
            rows.append([what, f"{t_slow:.2f}", f"{t_fast:.2f}", f"{t_slow / t_fast:.1f}x"])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    n = len(fast.train_labels)
    write_table(
        f"image_folder_{device.type}", f"Image folder: decode-once cache and epoch time, {device_name(device)}",
        ["epoch", "DataLoader path (s)", "in-memory fast path (s)", "fast-path speed-up"], rows,
        [f"CIFAR-10 JPEG folder (`../shared/datasets/cifar10-jpeg.tar.gz`): decode-once cache of all "
         f"{decoded:,} images {decode_s:.1f} s (headers read, decoded, one uint8 file written); a second load "
         f"that reuses it {reuse_s:.1f} s (file listing with sizes and mtimes + reading the cache), 0 decodes.",
         f"Epoch: CIFAR-10-LT ratio 100, max_count {args.max_count} ({n:,} training images), batch {args.batch} "
         f"a stream (two views + the classifier batch per step), median of {args.epochs} epochs after one "
         f"warm-up; DataLoader path with {args.workers} workers (JPEG decode, RandomResizedCrop 32 + flip + "
         "jitter + grayscale in torchvision), fast path with the batched augmentation (pad-4 crop + flip + "
         "jitter + grayscale). Training step: ResNet-8 hybrid net, SupCon + CE, SGD.",
         f"torch threads {torch.get_num_threads()}; measured on a shared machine (other jobs running), one run."])


if __name__ == "__main__":
    main()
