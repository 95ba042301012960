"""A Hugging Face encoder in the form graph exporters trace: positional inputs, one output.

Shared by the ONNX export (:mod:`clsr.encode.onnx`) and the OpenVINO conversion
(:mod:`clsr.encode.openvino`), so both trace the same graph from the same example.
"""

from __future__ import annotations

from typing import NamedTuple


class Traceable(NamedTuple):
    module: object  # torch.nn.Module: forward(*inputs) -> last hidden state (batch, tokens, hidden) float32
    names: list[str]  # the inputs, in order, as the tokenizer names them
    example: tuple  # one example batch of int64 tensors, in that order


def traceable(model, tokenizer) -> Traceable:
    """``model`` (put in fp32 eval mode) wrapped to take the tokenizer's inputs positionally and return its
    last hidden state, with an example of two texts of different lengths, so the traced graph keeps
    the attention mask."""
    import torch

    names = list(tokenizer.model_input_names)

    class LastHiddenState(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs))).last_hidden_state

    # Tracers walk the module's attributes, and reading transformers' `loss_function` property on an encoder
    # whose config names no loss warns ("loss_type=None ... unrecognized"). An encoder computes no loss here:
    # setting it (the property's own setter) leaves nothing to warn about.
    model.loss_function = None
    example = tokenizer(["an example passage", "a second, longer example passage"], padding=True,
                        return_tensors="pt")
    return Traceable(LastHiddenState(model.float().eval()), names, tuple(example[n] for n in names))
