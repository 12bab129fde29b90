"""``--custom-objects``: the Python modules that define a Keras file's custom layers, sent to the TF worker.

A Keras file stores only the *names* of custom classes; loading it needs the classes themselves. The
user names where they live and the TF worker imports them (running that module's code, as
``keras.models.load_model(custom_objects=...)`` would in the user's own script):

* ``path/to/layers.py`` - every public class and function defined in that file;
* ``path/to/layers.py:SensorNet`` or ``package.module:SensorNet`` - one attribute (a class, a function,
  or a dict of them); ``package.module`` alone - everything it defines.

:func:`specs` runs in the caller's process (no TensorFlow) and turns the user's values into JSON-ready
dicts; :func:`resolve` runs in the worker and imports them.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from migrate.core.errors import InputError, first_line

#: What ``convert(custom_objects=...)`` and ``compare(custom_objects=...)`` accept.
CustomObjects = str | Path | Mapping[str, Any] | list | tuple | None


def specs(value: CustomObjects) -> list[dict[str, Any]]:
    """Normalise a spec string/path, a list of them, or a ``{name: class}`` mapping into worker requests."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [_object_spec(name, obj) for name, obj in value.items()]
    if isinstance(value, (str, Path)):
        return [_text_spec(str(value))]
    return [spec for item in value for spec in specs(item)]


def _text_spec(text: str) -> dict[str, Any]:
    module, sep, attr = text.rpartition(":") if ":" in text else (text, "", "")
    if sep and not attr.replace(".", "_").isidentifier():  # a colon inside a path (C:\...), not module:attr
        module, attr = text, ""
    if not module:
        raise InputError(f"--custom-objects {text!r}: expected module.py, module.py:NAME or package.module:NAME")
    if module.endswith(".py") or Path(module).is_file():
        path = Path(module).expanduser()
        if not path.is_file():
            raise InputError(f"--custom-objects {text!r}: no such file {path}")
        return {"module": str(path.resolve()), "attr": attr or None, "name": None, "root": None}
    if not all(part.isidentifier() for part in module.split(".")):
        raise InputError(f"--custom-objects {text!r}: {module!r} is neither a .py file nor a module name")
    return {"module": module, "attr": attr or None, "name": None, "root": str(Path.cwd())}


def _object_spec(name: str, obj: Any) -> dict[str, Any]:
    """A class or function passed from Python: found again in the worker by its module and qualified name."""
    module_name = getattr(obj, "__module__", None)
    module = sys.modules.get(module_name or "")
    file = getattr(module, "__file__", None)
    if module_name is None or module is None or file is None or "<locals>" in getattr(obj, "__qualname__", "<locals>"):
        raise InputError(f"custom_objects[{name!r}]: {obj!r} is not a class or function defined at the top "
                         "level of an importable module; the TensorFlow worker imports it again from there")
    if module_name == "__main__":  # importing the running script again in the worker would run it again
        raise InputError(f"custom_objects[{name!r}]: {obj.__qualname__} is defined in the script being run; "
                         "move it to a module and pass that, or pass the module's path")
    depth = module_name.count(".") + (1 if Path(file).name == "__init__.py" else 0)
    root = Path(file).resolve().parents[depth]
    return {"module": module_name, "attr": obj.__qualname__, "name": name, "root": str(root)}


def resolve(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """Import each requested module (worker side) and return ``{name: object}`` for Keras."""
    objects: dict[str, Any] = {}
    for request in requests:
        module = _import(request)
        if not request.get("attr"):
            objects.update({name: value for name, value in vars(module).items()
                            if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
                            and value.__module__ == module.__name__})
            continue
        value: Any = module
        for part in request["attr"].split("."):
            if not hasattr(value, part):
                raise InputError(f"--custom-objects: {request['module']} has no attribute {request['attr']!r}")
            value = getattr(value, part)
        if isinstance(value, Mapping):
            objects.update(value)
        else:
            objects[request.get("name") or getattr(value, "__name__", request["attr"])] = value
    return objects


def _import(request: dict[str, Any]) -> Any:
    target = request["module"]
    try:
        if target.endswith(".py"):
            path = Path(target)
            name = path.stem if path.stem not in sys.modules else f"tf2torch_custom_objects_{path.stem}"
            if str(path.parent) not in sys.path:
                sys.path.append(str(path.parent))  # sibling imports of the user's module
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        if request.get("root") and request["root"] not in sys.path:
            sys.path.append(request["root"])
        return importlib.import_module(target)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"--custom-objects: importing {target} failed "
                         f"({type(exc).__name__}: {first_line(exc, 300)})") from exc
