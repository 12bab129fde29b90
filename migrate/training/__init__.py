"""Keras training setup -> torch: the optimizer and loss registries (pure Python, no torch or TensorFlow imports).

Shared by ``migrate.porting.train_script`` (which renders ``train.py``), the Keras training worker and
``checks.parity.train`` (which checks a Keras step against the torch one).
"""
