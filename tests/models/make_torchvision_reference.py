"""Writes torchvision_reference.json.gz: state_dict keys, shapes and logits of torchvision's models.

Run by hand in an environment that has torchvision (cnnlab itself never needs it):
    python tests/models/make_torchvision_reference.py
The test suite then checks cnnlab's models against this file without importing torchvision.
"""
import gzip
import json
from pathlib import Path

import torch
import torchvision

from reference_weights import TORCHVISION_MODELS, reference_input, reference_state

out = {"torchvision": torchvision.__version__, "models": {}}
for name in TORCHVISION_MODELS:
    model = getattr(torchvision.models, name)(weights=None).eval()
    shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    model.load_state_dict(reference_state(shapes))
    with torch.no_grad():
        logits = model(reference_input())[0]
    out["models"][name] = {"state_dict": shapes, "logits": [round(float(v), 6) for v in logits]}
    print(name, len(shapes), float(logits.abs().mean()))
path = Path(__file__).with_name("torchvision_reference.json.gz")
path.write_bytes(gzip.compress(json.dumps(out).encode(), mtime=0))
