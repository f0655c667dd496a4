"""The table `cnnlab models` prints (every registered model's family, parameter count and switches) without
importing torch or building 30 models: it is computed once on the meta device and stored in
`models/catalog.json` with a fingerprint of the model sources. Where those sources have changed since, the
table is computed afresh (a few seconds) instead of trusted; `python -m cnnlab.catalog` rewrites the file and
`tests/test_startup.py` fails while it is stale."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

MODELS = Path(__file__).parent / "models"
TABLE = MODELS / "catalog.json"


def fingerprint() -> str:
    """A hash of every model source file: the table is valid for exactly these sources."""
    digest = hashlib.sha256()
    for source in sorted(MODELS.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes().replace(b"\r\n", b"\n"))
    return digest.hexdigest()[:16]


def compute() -> list[dict]:
    """Build each registered model on the meta device (shapes only, no memory) and count its parameters."""
    import torch

    from .models import create_model, list_models, model_family, model_switches

    rows = []
    for name in list_models():
        with torch.device("meta"):
            params = sum(p.numel() for p in create_model(name).parameters())
        switches = model_switches(name)
        rows.append({"name": name, "family": model_family(name), "params": params,
                     "num_classes": switches["num_classes"],
                     "switches": {k: v for k, v in switches.items() if k not in ("num_classes", "in_channels")}})
    return json.loads(json.dumps(rows))  # the values as the stored table holds them (tuples become lists)


def catalog() -> list[dict]:
    """The stored table where it matches the model sources, else a freshly computed one."""
    try:
        stored = json.loads(TABLE.read_text())
    except (OSError, ValueError):
        stored = {}
    if stored.get("fingerprint") == fingerprint():
        return stored["models"]
    return compute()


def write() -> Path:
    TABLE.write_text(json.dumps({"fingerprint": fingerprint(), "models": compute()}, indent=1) + "\n")
    return TABLE


if __name__ == "__main__":
    print(f"wrote {write()}")
