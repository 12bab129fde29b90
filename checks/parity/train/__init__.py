"""Training-step parity: one Keras training setup (optimizer, loss, regularisers) against its PyTorch port.

``migrate.training.optimizers`` and ``migrate.training.losses`` map Keras objects to the torch code that
computes the same update/loss (rendered as source, so ``train.py`` and the parity check run the same lines);
``api.compare_train`` runs
Keras (child process, ``migrate.tf.train_worker``) and the ported module on one batch and compares the
training-mode forward, the loss, every gradient and, after the optimizer steps, every weight and statistic.
"""
