"""Static facts about each workload, importable without torch.

The scheduler and simulator need token costs and sizes; they must not pay for
importing torch to get them.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduling.tokens import token_cost


@dataclass(frozen=True)
class WorkloadSpec:
    """What the rest of the system needs to know about a model."""

    name: str
    #: Shape of one sample, without the batch axis.
    input_shape: tuple[int, ...]
    input_dtype: str
    #: Shape of one sample's output, without the batch axis.
    output_shape: tuple[int, ...]
    #: Memory tokens held by a loaded model, before activations.
    token_base: int
    #: Number of trainable parameters (torchvision-identical for the seed models).
    param_count: int
    #: Multiply-accumulate count × 2 for one sample; a size descriptor for the predictor.
    flops_per_sample: float

    def token_cost(self, samples: int, precision: str = "fp32") -> int:
        """Tokens a dispatch of `samples` samples of this model holds."""
        return token_cost(self.token_base, samples, precision)


IMAGE = (3, 224, 224)
LOGITS = (1000,)

# flops_per_sample: conv/linear/attention multiply-adds × 2, counted on the in-tree models
# (torchvision lists 1.81, 4.09 and 17.56 GMACs).
RESNET18 = WorkloadSpec("resnet18", IMAGE, "float32", LOGITS, 80, 11_689_512, 3.628e9)
RESNET50 = WorkloadSpec("resnet50", IMAGE, "float32", LOGITS, 160, 25_557_032, 8.178e9)
VIT_B_16 = WorkloadSpec("vit_b_16", IMAGE, "float32", LOGITS, 260, 86_567_656, 35.13e9)
# A few-thousand-parameter CNN on 3×32×32 inputs: fast enough for every test.
TINY = WorkloadSpec("tiny", (3, 32, 32), "float32", (10,), 10, 5_418, 3.245e6)
