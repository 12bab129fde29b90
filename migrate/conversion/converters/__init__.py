"""tf2torch's own ONNX -> torch converters, one small module per op family.

Importing this package imports every module in it, and each registers its converters into
onnx2torch's registry through :func:`migrate.conversion.converters.registry.converter`. Add a converter by
adding a module here; nothing else needs editing.
"""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("registry", "subgraph"):
        importlib.import_module(f"{__name__}.{_info.name}")
