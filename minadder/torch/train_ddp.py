"""Train the ResNet-20 AdderNet on CIFAR-10 with DistributedDataParallel, on many processes.

    torchrun --nproc_per_node 2 -m minadder.torch.train_ddp --data-dir ~/data --epochs 200
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 \\
        -m minadder.torch.train_ddp --data-dir ~/data          # two machines
    torchrun --nproc_per_node 2 -m minadder.torch.train_ddp --synthetic 256 --epochs 1  # no data

Everything distributed is PyTorch's: ``torch.distributed`` (gloo on CPUs, nccl on GPUs;
``--dist-backend`` to choose), ``DistributedSampler`` giving each process its share of
every epoch, ``DistributedDataParallel`` all-reducing (averaging) the gradients during
``backward()``. After it, ``scale_adder_grads`` applies Eq. 13 to the averaged filter
gradients, so every process computes the same factors and the replicas stay identical.
``--batch-size`` is per process: the global batch is that times the number of processes.

The images are read by minadder's dataset readers (``minadder.data.load_dataset``, which
finds CIFAR-10 in ``--data-dir``, ``$MINADDER_DATA`` or ``~/.cache/minadder``), augmented
with minadder's crop and flip, and batched by ``torch.utils.data.DataLoader``. torchrun
sets OMP_NUM_THREADS=1 for each of several processes, and minadder's cpu kernels follow
``torch.get_num_threads()``: one thread per process, no oversubscribed cores. Set
``--threads`` to give each process more.
"""
import argparse
import os
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .. import backend as minadder_backend
from ..data.loader import normalize, random_crop_flip
from .models import resnet20
from .scaling import scale_adder_grads
from .weights import save_safetensors

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class ArrayDataset(torch.utils.data.Dataset):
    """uint8 images (N, C, H, W) and int64 labels, one sample at a time for DataLoader."""

    def __init__(self, images, labels):
        self.images, self.labels = np.ascontiguousarray(images), np.asarray(labels, np.int64)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return torch.from_numpy(self.images[i]), int(self.labels[i])


def load_split(args, split):
    """The CIFAR-10 split as an ArrayDataset, or random images for --synthetic."""
    if args.synthetic:
        rng = np.random.default_rng(1234 + (split == "test"))
        n = args.synthetic if split == "train" else max(2, args.synthetic // 4)
        return ArrayDataset(rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n))
    from ..data import load_dataset

    data = load_dataset("cifar10", split, args.data_dir)
    return ArrayDataset(data.images, data.labels)


def prepare(images, seed, train):
    """uint8 batch -> normalised float32 tensor, with CIFAR crop and flip when training."""
    batch = images.numpy()
    if train:
        batch = random_crop_flip(batch, np.random.default_rng(seed))
    return torch.from_numpy(normalize(batch, CIFAR10_MEAN, CIFAR10_STD))


def setup(args):
    """Join the process group (torchrun's environment) and pick this process's device."""
    use_cuda = torch.cuda.is_available() and args.dist_backend in ("auto", "nccl")
    backend = args.dist_backend if args.dist_backend != "auto" else ("nccl" if use_cuda else "gloo")
    dist.init_process_group(backend)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank), backend
    return torch.device("cpu"), backend


def evaluate(model, dataset, args, device):
    """Top-1 accuracy on ``dataset``: process r scores images r, r + P, r + 2P, ... (every
    image exactly once; a DistributedSampler would repeat some to even out the shares)."""
    share = Subset(dataset, range(dist.get_rank(), len(dataset), dist.get_world_size()))
    loader = DataLoader(share, batch_size=args.batch_size, num_workers=args.workers)
    model.eval()
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for images, labels in loader:
            logits = model(prepare(images, 0, train=False).to(device))
            counts += torch.tensor([(logits.argmax(1).cpu() == labels).sum().item(), len(labels)],
                                   dtype=torch.float64, device=device)
    dist.all_reduce(counts)
    model.train()
    return (counts[0] / counts[1]).item()


def train(args):
    minadder_backend.configure()          # Numba's settings for the cpu kernels, before they load
    device, backend = setup(args)
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)          # the same initial weights on every process
    model = resnet20(kind="adder", grad_mode=args.grad_mode).to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    train_set = load_split(args, "train")
    sampler = DistributedSampler(train_set, shuffle=True, seed=args.seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler, drop_last=True,
                        num_workers=args.workers)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay, nesterov=args.momentum > 0)
    steps_per_epoch = len(loader) if args.max_steps is None else min(len(loader), args.max_steps)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, args.epochs * steps_per_epoch))
    if rank == 0:
        print(f"{world} processes ({backend}, {device.type}), {torch.get_num_threads()} threads each, "
              f"global batch {args.batch_size * world}, {steps_per_epoch} steps per epoch", flush=True)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        start, total, seen = time.perf_counter(), 0.0, 0
        for step, (images, labels) in enumerate(loader):
            if step >= steps_per_epoch:
                break
            x = prepare(images, (args.seed, epoch, step, rank), train=True).to(device)
            loss = torch.nn.functional.cross_entropy(ddp(x), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()                      # DDP averages the gradients over processes
            scale_adder_grads(ddp, eta=args.eta)  # Eq. 13 on the averaged filter gradients
            optimizer.step()
            schedule.step()
            total, seen = total + loss.item() * len(labels), seen + len(labels)
        rate = seen * world / (time.perf_counter() - start)
        if rank == 0:
            print(f"epoch {epoch + 1}/{args.epochs}: loss {total / max(1, seen):.4f} "
                  f"({rate:.1f} images/s over all processes)", flush=True)
    accuracy = evaluate(ddp, load_split(args, "test"), args, device)
    if rank == 0:
        print(f"test accuracy {100 * accuracy:.2f} %", flush=True)
        if args.save:
            save_safetensors(model, args.save)
            print(f"weights written to {args.save}", flush=True)
    # Wait for rank 0's file before anyone leaves: a process that tears down gloo while a
    # peer is still busy can make that peer abort at exit ("terminate called without an
    # active exception").
    dist.barrier()
    dist.destroy_process_group()
    return accuracy


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="where CIFAR-10 is (see minadder.data.locate)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="train on N random images instead of CIFAR-10 (a smoke test)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="at most this many steps per epoch")
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--eta", type=float, default=0.1, help="Eq. 13's eta for the adder filters")
    p.add_argument("--grad-mode", choices=("full", "sign"), default="full")
    p.add_argument("--dist-backend", choices=("auto", "gloo", "nccl"), default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch (and minadder) threads per process")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, help="write the trained weights here (.safetensors)")
    args = p.parse_args(argv)
    if args.synthetic < 0 or args.epochs < 1 or args.batch_size < 1 or (args.max_steps is not None and args.max_steps < 1):
        p.error("--synthetic, --epochs, --batch-size and --max-steps must be positive")
    return args


def main(argv=None):
    train(parse_args(argv))


if __name__ == "__main__":
    main()
