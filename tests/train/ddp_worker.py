"""Run under torchrun by test_distributed.py: trains on digits and records, after every optimiser step,
a hash of this rank's weights in `<out>/hashes-rank<R>.txt`, so the test can compare ranks step by step."""
import hashlib
import os
import sys

from cnnlab.train import TrainConfig, train


def main() -> None:
    out, hashes = sys.argv[1], sys.argv[2]
    rank = os.environ["RANK"]
    log = open(f"{hashes}/hashes-rank{rank}.txt", "w")

    def record(model, step):
        h = hashlib.sha1()
        for t in model.parameters():  # BN running statistics are per rank until evaluation broadcasts them
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        log.write(f"{step} {h.hexdigest()}\n")

    cfg = TrainConfig(model="resnet20", model_kwargs={"width": 0.5}, data="digits", epochs=3, batch_size=64,
                      lr=0.05, augment="flip,translate=2", out=out, quiet=True)
    train(cfg, on_step=record)
    log.close()


if __name__ == "__main__":
    main()
