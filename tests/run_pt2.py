"""Run a model.pt2 in a bare process: plain torch only, to prove the artifact needs nothing of ours.

Usage: python tests/run_pt2.py MODEL.pt2 NAMES_CSV IN.npz OUT.npz [IN.npz OUT.npz ...]
Inputs are fed positionally in NAMES order; outputs are saved as out0, out1, ...
"""

import sys

import numpy as np
import torch

path, names = sys.argv[1], sys.argv[2].split(",")
module = torch.export.load(path).module()
for in_path, out_path in zip(sys.argv[3::2], sys.argv[4::2]):
    with np.load(in_path) as data:
        args = [torch.from_numpy(data[n]) for n in names]
    with torch.no_grad():
        result = module(*args)
    result = result if isinstance(result, (tuple, list)) else (result,)
    np.savez(out_path, **{f"out{i}": t.numpy() for i, t in enumerate(result)})
leaked = sorted(m for m in ("tensorflow", "onnx2torch", "migrate", "keras") if m in sys.modules)
if leaked:
    sys.exit(f"plain torch load imported {leaked}")
