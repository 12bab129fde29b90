"""tf2torch checks: the migration linter and the numeric parity checker.

Importing this package is cheap and never pulls in TensorFlow or torch.
"""
