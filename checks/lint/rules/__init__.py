"""Rule modules; importing them registers their rules (see ``registry``)."""
from . import checkpoints, eval_mode, keras_defaults, layout, loss_activation, training_loop  # noqa: F401
