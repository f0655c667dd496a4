"""Cost of batched augmentation (issue 5), measured side by side in one run on CIFAR-10-sized data:
cnnlab's batched policy per epoch of 50,000 32x32 images, against the training step time of the fast
recipe's network and of resnet20, and against the same operations done per image with Pillow and NumPy in
DataLoader workers (2, as many as the cores).

    python benchmarks/augment_cost.py [--policy crop=0.35,flip,rotate=15,color=0.4,cutout=8] [--batch 512]
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageEnhance

from cnnlab.data.augment import Augmenter, parse_policy
from cnnlab.models import create_model
from cnnlab.runtime.device import autocast, resolve_precision, use_all_cores

EPOCH = 50_000


class PerImage(torch.utils.data.Dataset):
    """The same policy the usual way: one PIL image at a time."""

    def __init__(self, images: np.ndarray, policy) -> None:
        self.images, self.p = images, policy

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        p, img = self.p, Image.fromarray(self.images[i])
        w, h = img.size
        if p.crop < 1:
            area = np.random.uniform(p.crop, 1) * w * h
            ratio = np.exp(np.random.uniform(np.log(3 / 4), np.log(4 / 3)))
            cw, ch = min(w, int(round((area * ratio) ** 0.5))), min(h, int(round((area / ratio) ** 0.5)))
            x0, y0 = np.random.randint(0, w - cw + 1), np.random.randint(0, h - ch + 1)
            img = img.resize((w, h), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
        if p.rotate:
            img = img.rotate(np.random.uniform(-p.rotate, p.rotate), Image.BILINEAR)
        if p.flip != "none" and np.random.rand() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        for enhance, v in ((ImageEnhance.Brightness, p.brightness), (ImageEnhance.Contrast, p.contrast),
                           (ImageEnhance.Color, p.saturation)):
            if v:
                img = enhance(img).enhance(np.random.uniform(1 - v, 1 + v))
        a = np.asarray(img).copy()
        if p.cutout:
            cy, cx = np.random.randint(0, h), np.random.randint(0, w)
            a[max(0, cy - p.cutout // 2):cy - p.cutout // 2 + p.cutout,
              max(0, cx - p.cutout // 2):cx - p.cutout // 2 + p.cutout] = a.reshape(-1, 3).mean(0)
        return torch.from_numpy(a).permute(2, 0, 1)


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def step_seconds(name: str, batch: int) -> float:
    model = create_model(name, num_classes=10).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    precision = resolve_precision("auto", torch.device("cpu"))

    def step():
        with autocast(torch.device("cpu"), precision):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return timed(step, 3)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="crop=0.35,flip,rotate=15,color=0.4,cutout=8")
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    use_all_cores()
    policy = parse_policy(args.policy)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4096, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    augment = Augmenter(policy, len(x), seed=0)
    ids = torch.arange(args.batch)
    batched = timed(lambda: augment(x[:args.batch], ids, 0, 1), 10)
    steps = EPOCH / args.batch
    print(f"policy '{args.policy}', batch {args.batch}, per epoch of {EPOCH:,} 32x32 images:")
    print(f"  cnnlab batched, on the training process:    {batched * steps:7.2f} s")
    if policy.auto != "none" or policy.mixes or policy.hue or policy.vflip or policy.translate:
        print("  per image in DataLoader workers: not measured (PerImage implements crop, rotate, flip, "
              "brightness, contrast, saturation and cutout only)")
    else:
        loader = torch.utils.data.DataLoader(PerImage(images, policy), batch_size=args.batch, num_workers=2,
                                             persistent_workers=True)
        it = iter(loader)
        next(it)  # workers started
        start = time.perf_counter()
        n = 0
        for xb in it:
            n += len(xb)
        per_image = (time.perf_counter() - start) / n * EPOCH
        print(f"  per image in 2 DataLoader workers (Pillow):  {per_image:7.2f} s   "
              f"({per_image / (batched * steps):.1f}x the batched cost)")
    for name in ("airbench94", "resnet20"):
        train = step_seconds(name, args.batch) * steps
        print(f"  {name} training steps:{' ' * (23 - len(name))}{train:7.2f} s   "
              f"(batched augmentation: {batched * steps / train:.1%} of it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
