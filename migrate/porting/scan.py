"""Find the layer classes of a ``.keras`` file that no emitter handles, without loading it.

A ``.keras`` file is a zip whose ``config.json`` names every layer's class. Reading it here (no
TensorFlow) lets ``port`` name a Keras layer class without an emitter, or a Lambda of Python bytecode,
in one line before Keras would refuse to deserialize it. Custom classes are opened up by the worker.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from migrate.porting.emitters import EMITTERS, emitter_key

MODEL_CLASSES = {"Functional", "Sequential", "Model"}


def unsupported_layers(source: Path) -> dict[str, list[str]]:
    """Layer class -> names of the layers using it, for classes without an emitter (``.keras`` only)."""
    if source.suffix.lower() != ".keras":
        return {}
    try:
        with zipfile.ZipFile(source) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}  # the worker reports an unreadable file with its own message
    found: dict[str, list[str]] = {}
    _walk(config, found, top=True)
    return found


def _walk(node: Any, found: dict[str, list[str]], top: bool = False) -> None:
    if not isinstance(node, dict) or "class_name" not in node:
        return
    cls, config = node["class_name"], node.get("config") or {}
    if cls in MODEL_CLASSES or (top and isinstance(config, dict) and "layers" in config):
        for layer in config.get("layers", []):
            _walk(layer, found)
    elif cls != "InputLayer" and emitter_key(cls, node.get("module")) not in EMITTERS and _closed(node):
        found.setdefault(emitter_key(cls, node.get("module")), []).append(config.get("name", node.get("name", "?")))


def _closed(node: dict[str, Any]) -> bool:
    """Whether the worker cannot open this layer up: a Keras class without an emitter, or a Lambda holding
    Python bytecode (loading it would run code from the file). The user's own classes and Lambdas of
    registered functions are opened up in the worker (their ``call`` is traced)."""
    module = node.get("module") or "keras"
    if node["class_name"] == "Lambda":
        function = (node.get("config") or {}).get("function")
        return not isinstance(function, dict) or function.get("class_name") == "__lambda__"
    return module == "keras" or module.startswith("keras.")
