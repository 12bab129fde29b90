"""Graph passes that make onnx2torch GraphModules exportable; the entry point is ``migrate.conversion.passes.driver``.

* ``values``   - the abstract values (constants, shape vectors of SymInt-able items) and the walker.
* ``shape_ops`` - per-op rules: how shape arithmetic propagates and how shape consumers are rewritten.
* ``cleanup``  - constant materialisation, no-op removal, transpose cancellation, dead code.
"""
