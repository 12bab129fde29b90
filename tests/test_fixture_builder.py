"""The fixture builder process: TensorFlow imported once, each build in a fork that reports its own failure."""

from __future__ import annotations

from pathlib import Path

from fixtures.models.cache import _Builder


def test_builds_in_forks_of_one_process_and_reports_a_failed_build(tmp_path):
    builder = _Builder()
    try:
        assert builder.build("mlp", tmp_path / "mlp", tmp_path / "mlp.log") is None
        assert (tmp_path / "mlp" / "saved_model" / "saved_model.pb").is_file()
        blocked = tmp_path / "a-file"
        blocked.write_text("")
        assert builder.build("mlp", blocked / "out", tmp_path / "failed.log") == ""  # the builder's mkdir fails
        assert "NotADirectoryError" in (tmp_path / "failed.log").read_text()
        pid = builder.proc.pid
        assert builder.build("cnn", tmp_path / "cnn", tmp_path / "cnn.log") is None  # the same process goes on
        assert builder.proc.pid == pid and Path(tmp_path / "cnn" / "model.keras").is_file()
    finally:
        builder.close()
    assert builder.proc.returncode == 0
