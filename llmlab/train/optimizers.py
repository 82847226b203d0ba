"""The optimizers a config may name (the Trainer's `optim` names), and the memory each keeps per parameter.

Standard library only: the config validates `optimizer` before torch or transformers are imported, and
`llmlab plan` sizes optimizer states from shapes alone. A test checks every name against transformers'
`OptimizerNames`, so this list cannot drift from what the Trainer accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# bitsandbytes keeps 8-bit states in blocks of 256 values with one fp32 absmax each, plus a 256-entry fp32
# code book per state and tensor; tensors under 4096 elements keep fp32 states (its min_8bit_size).
BNB_BLOCK = 256
BNB_MIN_8BIT_SIZE = 4096
BNB_QMAP_BYTES = 256 * 4


@dataclass(frozen=True)
class OptimizerSpec:
    states: int  # state tensors of the parameter's shape: AdamW 2 (moments), Lion/RMSprop/Adagrad 1, SGD 0
    eight_bit: bool = False  # bitsandbytes blockwise 8-bit states
    factored: bool = False  # Adafactor: the second moment of a matrix as a row and a column vector
    package: str | None = None  # the import name of the package it needs beyond torch and transformers

    def state_bytes(self, shape: tuple[int, ...]) -> float:
        """Bytes of optimizer state for one trainable tensor of `shape`."""
        numel = math.prod(shape)
        if self.factored:
            # transformers' Adafactor (as the Trainer builds it: no first moment): fp32 row and column
            # statistics for a matrix, a full fp32 second moment for a vector.
            return 4.0 * (shape[0] + shape[1]) if len(shape) == 2 else 4.0 * numel
        if self.eight_bit and numel >= BNB_MIN_8BIT_SIZE:
            return self.states * (numel * (1 + 4 / BNB_BLOCK) + BNB_QMAP_BYTES)
        return self.states * 4.0 * numel


# The Trainer's names for each (paged_* variants page states to host memory under pressure on a GPU; on
# the device they need the same room). The Trainer builds sgd, adagrad and rmsprop without momentum.
OPTIMIZER_SPECS: dict[str, OptimizerSpec] = {
    "adamw_torch": OptimizerSpec(2),
    "adamw_torch_fused": OptimizerSpec(2),
    "adamw_8bit": OptimizerSpec(2, eight_bit=True, package="bitsandbytes"),
    "adamw_bnb_8bit": OptimizerSpec(2, eight_bit=True, package="bitsandbytes"),
    "paged_adamw_8bit": OptimizerSpec(2, eight_bit=True, package="bitsandbytes"),
    "paged_adamw_32bit": OptimizerSpec(2, package="bitsandbytes"),
    "lion_8bit": OptimizerSpec(1, eight_bit=True, package="bitsandbytes"),
    "lion_32bit": OptimizerSpec(1, package="bitsandbytes"),
    "paged_lion_8bit": OptimizerSpec(1, eight_bit=True, package="bitsandbytes"),
    "paged_lion_32bit": OptimizerSpec(1, package="bitsandbytes"),
    "adafactor": OptimizerSpec(1, factored=True),
    "sgd": OptimizerSpec(0),
    "adagrad": OptimizerSpec(1),
    "rmsprop": OptimizerSpec(1),
}
OPTIMIZERS: tuple[str, ...] = tuple(OPTIMIZER_SPECS)
DEFAULT_OPTIMIZER = "adamw_torch_fused"  # the Trainer's own default (transformers 5 with torch >= 2.8)
