"""CIFAR-sized trials sharing one GPU, as fractional Ray GPUs would: 1, 2, 4 and 8 processes at a
time, each training Hybrid-SC on ResNet-32 over synthetic 32x32 data the size of CIFAR-100-LT
(10,847 images, 100 classes, batch 512). Reports the epochs per second of all processes together,
so that the sweep's default trials per GPU comes from a measurement.

    python bench/trials_per_gpu.py --device cuda            # 1, 2, 4, 8 trials on one GPU
    python bench/trials_per_gpu.py --device cpu --counts 1 2 --images 2048 --batch 128   # a smoke run
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import torch
from common import device_name, write_table


def trial(rank: int, args, queue) -> None:
    import numpy as np

    from hybridlt.data.augment import BatchAugment
    from hybridlt.data.long_tail import class_counts, shot_groups
    from hybridlt.data.memory import InMemoryData
    from hybridlt.data.samplers import create_sampler
    from hybridlt.data.streams import InMemoryStreams
    from hybridlt.model.curriculum import Curriculum
    from hybridlt.model.evaluate import accuracy_report, count_correct
    from hybridlt.model.hybrid import HybridObjective, create_hybrid_net
    from hybridlt.model.losses import CrossEntropy, SupConLoss
    from hybridlt.model.optim import build_optimizer, build_scheduler
    from hybridlt.model.train import Trainer

    torch.manual_seed(rank)
    if args.device == "cpu":
        torch.set_num_threads(1)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(rank)
    n, c = args.images, 100
    labels = torch.from_numpy(np.sort(np.random.default_rng(rank).integers(0, c, n)))
    data = InMemoryData(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), labels,
                        torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.arange(1000) % c, [str(i) for i in range(c)])
    counts = class_counts(labels.numpy(), c)
    con = create_sampler("random", labels.numpy(), args.batch, seed=rank, salt=1)
    ce = create_sampler("class_balanced", labels.numpy(), args.batch, seed=rank, salt=2)
    augment = BatchAugment([0.5] * 3, [0.25] * 3)
    streams = InMemoryStreams(data, con, ce, augment, rank, device)
    obj = HybridObjective(create_hybrid_net("resnet32", c), SupConLoss(0.1), CrossEntropy(counts, args.epochs))
    obj = obj.to(device)
    if device.type == "cuda":
        obj = obj.to(memory_format=torch.channels_last)
    opt = build_optimizer(obj, 0.5)
    sched = build_scheduler(opt, streams.steps_per_epoch, args.epochs, "cosine")
    test_x, test_y = augment.normalize(data.test_images.to(device)), data.test_labels.to(device)
    groups = shot_groups(counts)

    def evaluate(net):
        correct, total = count_correct(net, [(test_x, test_y)], c, device, torch.bfloat16 if device.type == "cuda"
                                       else None)
        return accuracy_report(correct.tolist(), total.tolist(), groups)

    trainer = Trainer(obj, opt, sched, streams, Curriculum("power", args.epochs), evaluate, args.epochs, device,
                      checkpoint_every=10**9)
    times = []
    trainer.fit(lambda m, ckpt: times.append(m["epoch_time_s"] + m["eval_time_s"]))
    queue.put(times[1:] or times)  # the first epoch warms up kernels and the allocator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--images", type=int, default=10847)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    rows, base = [], None
    for k in args.counts:
        queue = ctx.Queue()
        procs = [ctx.Process(target=trial, args=(r, args, queue)) for r in range(k)]
        start = time.perf_counter()
        for p in procs:
            p.start()
        per_trial = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        wall = time.perf_counter() - start
        epochs_per_s = sum(len(t) / sum(t) for t in per_trial)
        base = base or epochs_per_s
        rows.append([k, f"{epochs_per_s:.2f}", f"{epochs_per_s / base:.2f}", f"{wall:.0f}"])
    write_table(f"trials_per_gpu_{args.device}", f"Trials sharing one device: {device_name(torch.device(args.device))}",
                ["trials at once", "epochs / s, all trials", "vs 1 trial", "wall s"], rows,
                [f"ResNet-32, {args.images} synthetic 32x32 images, 100 classes, batch {args.batch} per stream, "
                 f"Hybrid-SC; steady-state epochs (the first of {args.epochs} excluded), training + evaluation."])


if __name__ == "__main__":
    main()
