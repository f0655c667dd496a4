"""Run under torchrun by test_distributed.py (and once without it, as the reference).

    ddp_worker.py hashes OUT HASH_DIR   train on digits; after every optimiser step write a hash of this
                                        rank's weights and of its BN running statistics to
                                        HASH_DIR/hashes-rank<R>.txt
    ddp_worker.py first-step OUT FILE   train resnet20 without BN in fp32; save the weights after step 1
                                        (rank 0) to FILE
    ddp_worker.py pruned OUT DIR        train with --prune 0.3; write the epoch, length and a hash of each
                                        epoch's image order this rank draws to DIR/orders-rank<R>.txt
"""
import hashlib
import os
import sys

import torch

from cnnlab.train import TrainConfig, train


def digest(tensors) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    mode, out, target = sys.argv[1:4]
    rank = os.environ.get("RANK", "0")
    if mode == "hashes":
        log = open(f"{target}/hashes-rank{rank}.txt", "w")
        cfg = TrainConfig(model="resnet20", model_kwargs={"width": 0.5}, data="digits", epochs=3, batch_size=64,
                          lr=0.05, augment="flip,translate=2", out=out, quiet=True, report=False)
        train(cfg, on_step=lambda model, step: log.write(
            f"{step} {digest(model.parameters())} {digest(model.buffers())}\n"))
        log.close()
    elif mode == "pruned":
        import cnnlab.train.loop as loop

        drawn, draw = open(f"{target}/orders-rank{rank}.txt", "w"), loop.epoch_order

        def logged(images, epoch, *rest):
            order, weight = draw(images, epoch, *rest)
            drawn.write(f"{epoch} {len(order)} {digest([order])}\n")
            return order, weight

        loop.epoch_order = logged
        cfg = TrainConfig(model="resnet20", model_kwargs={"width": 0.25}, data="digits", image_size=16, epochs=3,
                          batch_size=64, prune=0.3, out=out, quiet=True, report=False)
        train(cfg)
        drawn.close()
    else:
        def save(model, step):
            if step == 1 and rank == "0":
                torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, target)

        cfg = TrainConfig(model="resnet20", model_kwargs={"width": 0.5, "bn": False}, data="digits", epochs=1,
                          batch_size=64, lr=0.01, precision="fp32", out=out, quiet=True, report=False)
        train(cfg, on_step=save)


if __name__ == "__main__":
    main()
