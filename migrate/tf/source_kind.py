"""What kind of model SOURCE is, decided without TensorFlow so that a bad path fails fast in the parent."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from migrate.core.artifacts import not_regular
from migrate.core.errors import InputError


def source_kind(source: Path) -> str:
    """Classify SOURCE without TensorFlow so bad paths fail fast with a clear message."""
    try:
        str(source).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{os.fsencode(source).decode('utf-8', 'backslashreplace')}: the path has bytes that "
                          "are not UTF-8, which TensorFlow cannot open; rename it") from None
    if not source.exists():
        raise InputError(f"{source}: no such file or directory; pass a SavedModel directory, a .keras or an .h5 file")
    special = not_regular(source)
    if special:
        raise InputError(f"{source}: is {special}, not a model file; pass a SavedModel directory, "
                          "a .keras or an .h5 file")
    if source.is_dir():
        if not (source / "saved_model.pb").exists() and not (source / "saved_model.pbtxt").exists():
            what = "is empty" if not any(source.iterdir()) else "has no saved_model.pb"
            raise InputError(f"{source}: directory {what}, so it is not a SavedModel; "
                              "pass the directory written by tf.saved_model.save or model.export")
        return "saved_model"
    suffix = source.suffix.lower()
    if suffix == ".keras":
        if not zipfile.is_zipfile(source):
            raise InputError(f"{source}: not a Keras model (a .keras file is a zip archive written by model.save); "
                              "check the path or re-save the model")
        return "keras"
    if suffix in (".h5", ".hdf5"):
        with open(source, "rb") as fh:
            if fh.read(8) != b"\x89HDF\r\n\x1a\n":
                raise InputError(f"{source}: not an HDF5 file, so not a Keras .h5 model; check the path "
                                  "or re-save the model")
        return "h5"
    raise InputError(f"{source}: unsupported file type {suffix or '(none)'}; pass a SavedModel directory, "
                      "a .keras or an .h5 file")


def port_source_kind(source: Path) -> str:
    """Like ``source_kind``, but a SavedModel needs the Keras layer graph (``keras_metadata.pb``)."""
    kind = source_kind(source)
    if kind == "saved_model" and not (source / "keras_metadata.pb").exists():
        raise InputError(f"{source}: this SavedModel has no Keras layer graph (written by model.export or "
                          "tf.saved_model.save), so there is no source code to port; use 'tf2torch convert' "
                          "for an inference program")
    return kind
