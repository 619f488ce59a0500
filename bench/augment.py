"""Batched tensor augmentation (data/augment.py) vs a conventional per-sample torchvision pipeline.

The reference: PIL images in a DataLoader, ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``,
``RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)``, ``RandomGrayscale(0.2)``, ``ToTensor``,
``Normalize``, then moved to the device. Ours: the same operations on a uint8 batch already on the
device. Both make one augmented view of N 32x32 RGB images; images per second, and the ratio.

    python bench/augment.py [--images 8192] [--batch 512] [--workers 2] [--device cuda]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import best_time, device_name, write_table
from PIL import Image
from torchvision import transforms as T

from hybridlt.data.augment import BatchAugment

MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


class PILDataset(torch.utils.data.Dataset):
    def __init__(self, images: np.ndarray):
        self.images = images
        self.transform = T.Compose([
            T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(0.2),
            T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(args.images, 32, 32, 3), dtype=np.uint8)

    loader = torch.utils.data.DataLoader(PILDataset(hwc), batch_size=args.batch, num_workers=args.workers,
                                         persistent_workers=args.workers > 0)

    def reference():
        for batch in loader:
            batch.to(device)

    images = torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous().to(device)
    augment = BatchAugment(MEAN, STD)
    gen = torch.Generator(device=device).manual_seed(0)

    def ours():
        for i in range(0, args.images, args.batch):
            augment(images[i:i + args.batch], gen, jitter=True)

    ref_s = best_time(reference, device, repeats=3)
    our_s = best_time(ours, device, repeats=5)
    rows = [[f"torchvision per-sample (PIL, DataLoader, {args.workers} workers)", f"{args.images / ref_s:,.0f}", "1.0"],
            ["hybridlt batched tensor ops on the device", f"{args.images / our_s:,.0f}", f"{ref_s / our_s:.1f}"]]
    write_table(f"augment_{device.type}", f"Augmentation throughput on {device_name(device)}",
                ["pipeline", "images / s", "speed-up"], rows,
                [f"{args.images} random 32x32 RGB images, batch {args.batch}, crop pad 4 + flip + jitter (p 0.8) + "
                 "grayscale (p 0.2) + normalise; best of 3 (reference) / 5 (ours) passes after one warm-up."])


if __name__ == "__main__":
    main()
