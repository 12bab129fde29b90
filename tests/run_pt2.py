"""Run a model.pt2 in a bare process: plain torch only, to prove the artifact needs nothing of ours.

Usage: python tests/run_pt2.py [--compile] MODEL.pt2 NAMES_CSV IN.npz OUT.npz [IN.npz OUT.npz ...]
Inputs are fed positionally in NAMES order; outputs are saved as out0, out1, ...
With --compile the module also runs under torch.compile(fullgraph=True) (a graph break raises) and
its outputs must equal the eager ones to 1e-5.
"""

import sys

import numpy as np
import torch

argv = sys.argv[1:]
compile_too = argv[0] == "--compile"
argv = argv[1:] if compile_too else argv
path, names = argv[0], argv[1].split(",")
module = torch.export.load(path).module()
compiled = torch.compile(module, fullgraph=True, backend="eager", dynamic=True) if compile_too else None
for in_path, out_path in zip(argv[2::2], argv[3::2]):
    with np.load(in_path) as data:
        args = [torch.from_numpy(data[n]) for n in names]
    with torch.no_grad():
        result = module(*args)
        result = result if isinstance(result, (tuple, list)) else (result,)
        if compiled is not None:
            again = compiled(*args)
            again = again if isinstance(again, (tuple, list)) else (again,)
            for eager, comp in zip(result, again):
                torch.testing.assert_close(comp, eager, atol=1e-5, rtol=1e-5)
    np.savez(out_path, **{f"out{i}": t.numpy() for i, t in enumerate(result)})
leaked = sorted(m for m in ("tensorflow", "onnx2torch", "migrate", "keras") if m in sys.modules)
if leaked:
    sys.exit(f"plain torch load imported {leaked}")
