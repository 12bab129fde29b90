"""Keras' image augmentation layers: what they do in ``eval()`` exactly, and in ``train()`` where a torch
implementation with the Keras parameters is exact in distribution (RandomFlip); the others stay the
identity in ``train()`` with a one-line warning saying what to add to the data pipeline.

``tf2torch parity --train`` switches them off on both sides (Keras runs them in inference mode; the torch
``RandomFlip`` is an ``nn.Dropout`` whose ``p``, the flip probability, parity sets to 0 like dropout).
"""

from __future__ import annotations

from typing import Any

from migrate.porting.emitters.base import Call, Layer, Out, Unsupported, emitter

#: Keras layer -> the torchvision transform that does its training-time work on the data
PIPELINE = {"RandomRotation": "torchvision.transforms.v2.RandomRotation",
            "RandomZoom": "torchvision.transforms.v2.RandomAffine(scale=...)",
            "RandomTranslation": "torchvision.transforms.v2.RandomAffine(translate=...)",
            "RandomContrast": "torchvision.transforms.v2.ColorJitter(contrast=...)",
            "RandomCrop": "torchvision.transforms.v2.RandomCrop"}

RANDOM_FLIP = '''
class RandomFlip(nn.Dropout):
    """keras.layers.RandomFlip: in train(), each image flipped with probability p (0.5, as in Keras) along the
    Keras mode's axes; the identity in eval(). An nn.Dropout so that p = 0 switches it off like dropout."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__(0.5)
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        for dim in self.dims:
            flip = torch.rand(x.shape[0], device=x.device) < self.p
            x = torch.where(flip.view(-1, *[1] * (x.dim() - 1)), x.flip(dim), x)
        return x
'''


@emitter("RandomFlip")
def random_flip(layer: Layer, call: Call, ctx: Any) -> Out:
    x = call.input
    mode = layer.config.get("mode", "horizontal_and_vertical")
    if x.rank != 4:
        raise Unsupported("RandomFlip on tensors other than images")
    dims = {"horizontal": (3,), "vertical": (2,), "horizontal_and_vertical": (3, 2)}[mode]
    ctx.helper("RandomFlip", RANDOM_FLIP)
    mod = ctx.submodule(layer, f"RandomFlip({dims!r})")
    return Out(f"{mod}({ctx.cf(x)})", "cf")


@emitter("RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast")
def random_identity(layer: Layer, call: Call, ctx: Any) -> Out:
    """The identity in eval() as in Keras; in train() too, with a warning naming the transform to add."""
    ctx.renderer.notes.append(f"{layer.class_name} {layer.name!r} is the identity in the ported module (as in "
                              f"Keras' inference); for training, add {PIPELINE[layer.class_name]} to your data "
                              "pipeline")
    return Out(call.input.var, call.input.layout)


@emitter("RandomCrop")
def random_crop(layer: Layer, call: Call, ctx: Any) -> Out:
    """Keras' inference: the largest window of the target aspect ratio, resized to the target (bilinear); for an
    input already of the target's aspect ratio that is a resize of the whole image."""
    x, cfg = call.input, layer.config
    h, w = x.shape[1], x.shape[2]
    if h is None or w is None or h * cfg["width"] != w * cfg["height"]:
        raise Unsupported("RandomCrop on an input of another aspect ratio than the crop, or of dynamic size")
    ctx.renderer.notes.append(f"RandomCrop {layer.name!r} resizes to {cfg['height']}x{cfg['width']} in the ported "
                              f"module (Keras' inference); for training, add {PIPELINE['RandomCrop']} to your data "
                              "pipeline")
    if (h, w) == (cfg["height"], cfg["width"]):
        return Out(x.var, x.layout)
    size = (cfg["height"], cfg["width"])
    return Out(f"{ctx.need('F')}.interpolate({ctx.cf(x)}, size={size}, mode='bilinear', align_corners=False)", "cf")
