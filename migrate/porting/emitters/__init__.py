"""Layer emitters: one small module per Keras layer family; importing this package registers them all.

Register your own layer class without editing anything here (docs/port.md)::

    from migrate.porting.emitters import emitter

    @emitter("MyScale")
    def my_scale(layer, call, ctx):
        return f"{call.input.var} * {layer.config['factor']!r}"
"""

from migrate.porting.emitters import (  # noqa: F401  (each module registers its emitters on import)
    activations,
    attention,
    augmentation,
    conv,
    core,
    ctc,
    kops,
    merge,
    normalization,
    ops,
    pooling,
    preprocessing,
    recurrent,
    reshaping,
)
from migrate.porting.emitters.base import (
    EMITTERS,
    Call,
    Layer,
    Out,
    Unsupported,
    Value,
    Weight,
    emitter,
    emitter_key,
)

__all__ = ["EMITTERS", "Call", "Layer", "Out", "Unsupported", "Value", "Weight", "emitter", "emitter_key"]
