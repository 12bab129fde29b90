"""Import contracts of docs/architecture.md, checked from source with ``ast`` (tests/architecture.py).

The real tree must satisfy every contract; a small synthetic tree that satisfies them all must fail each one
when a single violation is planted in it (so a contract that silently checks nothing fails here).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests import architecture as arch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real_edges() -> dict[str, list[arch.Edge]]:
    return arch.collect(arch.read_tree(ROOT))


@pytest.mark.parametrize("name", sorted(arch.CONTRACTS))
def test_contract_holds(real_edges, name):
    violations = arch.CONTRACTS[name](real_edges)
    assert not violations, f"{name}:\n  " + "\n  ".join(violations)


def test_every_module_is_read(real_edges):
    files = [p for package in arch.FIRST_PARTY for p in (ROOT / package).rglob("*.py")]
    assert len(real_edges) == len(files) > 100


def test_checker_sees_the_real_imports(real_edges):
    """Known edges of the real tree: the contracts above would pass vacuously if the checker missed these."""
    seen = {(e.source, e.target, e.where, e.how) for edges in real_edges.values() for e in edges}
    assert ("checks.lint.engine", "migrate.core.errors", "module", "import") in seen
    assert ("migrate", "migrate.conversion.api", "function", "import") in seen  # lazy __getattr__
    assert ("migrate.cli", "checks.lint.cli", "module", "string") in seen  # the plugin table
    assert ("migrate.conversion.onnx2torch_compat", "onnx2torch", "function", "call") in seen
    assert ("checks.lint.registry", "checks.lint.rules", "module", "import") in seen  # `from . import rules`
    assert any(e.target == "tensorflow" for e in real_edges["migrate.tf.export_worker"])
    assert any(e.where == "typing" for e in real_edges["checks.lint.rule"])


# ---- planted violations ----

#: a miniature of the real layout that satisfies every contract (including the lazy ``migrate.__getattr__``
#: that reaches torch, which checks.lint must not be blamed for: it only imports migrate.core.errors)
CLEAN = {
    "migrate/__init__.py": """
        def __getattr__(name):
            from migrate.conversion import api
            return getattr(api, name)
    """,
    "migrate/cli.py": """
        from importlib import import_module
        _PLUGINS = {"port": "migrate.porting.cli", "lint": "checks.lint.cli"}
        def main(name):
            import_module(_PLUGINS[name]).run()
    """,
    "migrate/core/__init__.py": "",
    "migrate/core/errors.py": "def first_line(text):\n    return text\n",
    "migrate/conversion/__init__.py": "",
    "migrate/conversion/api.py": """
        import torch
        from ..core.errors import first_line
        from migrate.tf import client
        def convert():
            import numpy
            return client.run_worker("migrate.tf.worker")
    """,
    "migrate/porting/__init__.py": "",
    "migrate/porting/api.py": "from migrate.core import errors\n",
    "migrate/porting/cli.py": "from . import api\n",
    "migrate/tf/__init__.py": "",
    "migrate/tf/client.py": "def run_worker(name):\n    return name\n",
    "migrate/tf/worker.py": "import tensorflow as tf\nimport tf2onnx\nfrom keras import layers\n",
    "checks/__init__.py": "",
    "checks/lint/__init__.py": "from .engine import lint\n",
    "checks/lint/engine.py": """
        from typing import TYPE_CHECKING
        import libcst
        from migrate.core.errors import first_line
        if TYPE_CHECKING:
            from .cli import Options
        def lint(path):
            return first_line(path)
    """,
    "checks/lint/cli.py": "from . import engine\nclass Options: ...\n",
    "checks/parity/__init__.py": "",
    "checks/parity/api.py": "import numpy\nimport migrate\nfrom migrate.tf.client import run_worker\n",
}


def _edges(tmp_path: Path, plant: dict[str, str]) -> dict[str, list[arch.Edge]]:
    """CLEAN with ``plant``'s files added or replaced, written under tmp_path and read back like the real tree."""
    for rel, text in {**CLEAN, **plant}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return arch.collect(arch.read_tree(tmp_path))


def test_clean_tree_passes_every_contract(tmp_path):
    edges = _edges(tmp_path, {})
    assert {name: contract(edges) for name, contract in arch.CONTRACTS.items() if contract(edges)} == {}


PLANTED = [
    # checks.lint imports no runtime, directly or through first-party modules (function level too)
    ("lint_imports_no_runtimes", {"checks/lint/rules.py": "import numpy as np\n"}, "numpy"),
    ("lint_imports_no_runtimes", {"checks/lint/cli.py": "def run():\n    from torch import nn\n"}, "torch"),
    ("lint_imports_no_runtimes",
     {"migrate/core/errors.py": "def first_line(text):\n    import torch\n    return text\n"},
     "checks.lint.engine -> migrate.core.errors -> torch"),
    ("lint_imports_no_runtimes", {"checks/lint/engine.py": "from migrate.conversion import api\n"},
     "checks.lint.engine -> migrate.conversion.api -> torch"),
    ("lint_imports_no_runtimes", {"checks/lint/engine.py": "from migrate import convert\n"},
     "checks.lint.engine -> migrate -> migrate.conversion.api -> torch"),
    ("lint_imports_no_runtimes",
     {"checks/lint/engine.py": "import importlib\ndef f():\n    return importlib.import_module('keras')\n"},
     "keras"),
    # TensorFlow and friends only in migrate.tf: any nesting level, import_module/__import__ literals
    ("tf_only_in_migrate_tf", {"migrate/porting/api.py": "import tensorflow as tf\n"}, "migrate.porting.api:1"),
    ("tf_only_in_migrate_tf",
     {"migrate/porting/api.py": "def f():\n    if True:\n        try:\n            from keras.layers import Dense\n"
                                "        except ImportError:\n            pass\n"},
     "migrate.porting.api:4 -> keras.layers"),
    ("tf_only_in_migrate_tf", {"checks/parity/api.py": "class A:\n    import tf2onnx\n"}, "tf2onnx"),
    ("tf_only_in_migrate_tf", {"migrate/core/errors.py": "import tf_keras\n"}, "tf_keras"),
    ("tf_only_in_migrate_tf", {"migrate/core/errors.py": "from keras_hub import models\n"}, "keras_hub"),
    ("tf_only_in_migrate_tf",
     {"checks/parity/api.py": "import importlib\ndef f():\n    return importlib.import_module('tensorflow')\n"},
     "checks.parity.api:3 -> tensorflow (call, function level)"),
    ("tf_only_in_migrate_tf", {"migrate/cli.py": "tf = __import__('tensorflow')\n"}, "tensorflow (call"),
    # migrate never imports checks
    ("migrate_imports_no_checks", {"migrate/core/errors.py": "def f():\n    from checks.lint import engine\n"},
     "migrate.core.errors:2 -> checks.lint.engine"),
    ("migrate_imports_no_checks", {"migrate/porting/api.py": "import checks\n"}, "checks"),
    ("migrate_imports_no_checks",
     {"migrate/porting/api.py": "from importlib import import_module\nimport_module('checks.lint.cli')\n"},
     "checks.lint.cli (call"),
    ("migrate_imports_no_checks",  # only migrate.cli's plugin table may name checks modules, and only their CLIs
     {"migrate/porting/cli.py": "PLUGINS = ['checks.lint.cli']\n"}, "checks.lint.cli (string"),
    ("migrate_imports_no_checks", {"migrate/cli.py": "from checks.lint.cli import main\n"}, "checks.lint.cli"),
    # migrate.conversion and migrate.porting stay apart (relative imports resolved)
    ("conversion_and_porting_independent", {"migrate/conversion/api.py": "from ..porting import api\n"},
     "migrate.conversion.api:1 -> migrate.porting.api"),
    ("conversion_and_porting_independent",
     {"migrate/porting/api.py": "def f():\n    from migrate.conversion.api import convert\n"},
     "migrate.porting.api:2 -> migrate.conversion.api"),
    # cycles, module- and function-level, with relative imports and `from package import name`
    ("no_import_cycles", {"migrate/core/errors.py": "def f():\n    from migrate.conversion import api\n"},
     "migrate.conversion.api -> migrate.core.errors -> migrate.conversion.api"),
    ("no_import_cycles",
     {"migrate/porting/__init__.py": "from .api import port\nVERSION = 1\n",
      "migrate/porting/api.py": "from migrate.porting import VERSION\ndef port(): ...\n"},
     "migrate.porting -> migrate.porting.api -> migrate.porting"),
    ("no_import_cycles",
     {"checks/lint/cli.py": "from . import engine\n",
      "checks/lint/engine.py": "def lint():\n    from .rules import a\n",
      "checks/lint/rules.py": "a = 1\nimport checks.lint.cli\n"},
     "checks.lint.cli -> checks.lint.engine -> checks.lint.rules -> checks.lint.cli"),
]


@pytest.mark.parametrize(("name", "plant", "expected"), PLANTED,
                         ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(PLANTED)])
def test_planted_violation_fails_its_contract(tmp_path, name, plant, expected):
    violations = arch.CONTRACTS[name](_edges(tmp_path, plant))
    assert any(expected in v for v in violations), violations


def test_every_contract_has_a_planted_violation():
    assert {name for name, _, _ in PLANTED} == set(arch.CONTRACTS)


def test_typing_only_imports_make_no_cycle(tmp_path):
    """``if TYPE_CHECKING:`` imports never run, so they close no cycle (checks/lint/rule.py relies on this)."""
    plant = {"checks/lint/cli.py": "from .engine import lint\nclass Options: ...\n"}
    edges = _edges(tmp_path, plant)
    assert ("checks.lint.engine", "checks.lint.cli", "typing") in {(e.source, e.target, e.where)
                                                                   for e in edges["checks.lint.engine"]}
    assert arch.no_import_cycles(edges) == []


def test_in_memory_source_map():
    """``collect`` takes a source map directly: the checker needs no files."""
    edges = arch.collect({"migrate": ("", True), "migrate.a": ("from . import b\n", False),
                          "migrate.b": ("from .a import x\n", False)})
    assert arch.no_import_cycles(edges) == ["migrate.a -> migrate.b -> migrate.a"]
