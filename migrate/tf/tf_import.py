"""Import TensorFlow quietly in a worker; a missing TensorFlow is one line that says where to install it."""

from __future__ import annotations

import sys
from typing import Any

from migrate.core.errors import InputError


def quiet_tf() -> Any:
    """TensorFlow with its own, tf2onnx's and absl's logs at ERROR."""
    import logging

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass
    return tf


def import_tf() -> Any:
    """``quiet_tf()``, or an InputError naming this interpreter when TensorFlow is missing."""
    try:
        return quiet_tf()
    except ImportError as exc:
        raise InputError(
            f"TensorFlow is not installed for {sys.executable} ({exc}); "
            "install tensorflow or tensorflow-cpu there, or set TF2TORCH_TF_PYTHON to a Python that has it"
        ) from exc
