"""The gated convolutional encoder (config ``encoder: "gatedcnn"``; Dauphin et al.'s GCNN language model), as the
original's models/cnn/ configs use it.

Each layer is a causal convolution over time (the sequence is left-padded with ``kernel_size - 1`` zeros) gated
by a second one: ``h = (conv(x) + conv_b) * sigmoid(gate(x) + gate_b)``. The first layer reads the (T, emb_size)
embeddings as a one-channel image with a (kernel_size, emb_size) kernel; the others read the hidden_size
channels with a (kernel_size, 1) kernel. Every ``block_size`` layers after the first, the output adds the output
of the previous block (a residual connection). No attention, so hidden_size need not divide into heads.

State keys are the original's: ``encoder.conv_1.*``, ``encoder.gate_1.*``, ``encoder.conv_b1``,
``encoder.gate_b1`` (1, H, 1, 1), ``encoder.conv.{i}.*``, ``encoder.gate.{i}.*``, ``encoder.conv_b.{i}``,
``encoder.gate_b.{i}`` for the layers_num - 1 later layers. (The separate biases add to the convolutions'
own; the original drew them from N(0, 1), here they start at zero.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.encoders._recurrent import refuse_cache
from tencentpretrain.registry import ENCODERS


def _bias(hidden_size: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(1, hidden_size, 1, 1))


@ENCODERS.register("gatedcnn")
class GatedCnnEncoder(nn.Module):
    """A stack of ``layers_num`` gated causal convolutions."""

    uses_attention = False
    required_keys = ("kernel_size", "block_size")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hidden, k = config.hidden_size, config.kernel_size
        self.kernel_size = k
        self.block_size = config.block_size
        self.conv_1 = nn.Conv2d(1, hidden, (k, config.emb_size))
        self.gate_1 = nn.Conv2d(1, hidden, (k, config.emb_size))
        self.conv_b1, self.gate_b1 = _bias(hidden), _bias(hidden)
        later = config.layers_num - 1
        self.conv = nn.ModuleList(nn.Conv2d(hidden, hidden, (k, 1)) for _ in range(later))
        self.gate = nn.ModuleList(nn.Conv2d(hidden, hidden, (k, 1)) for _ in range(later))
        self.conv_b = nn.ParameterList(_bias(hidden) for _ in range(later))
        self.gate_b = nn.ParameterList(_bias(hidden) for _ in range(later))

    def _causal(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, W) -> (B, C, T + kernel_size - 1, W): zeros before the first time step."""
        return F.pad(x, (0, 0, self.kernel_size - 1, 0))

    def forward(self, emb: torch.Tensor, seg: torch.Tensor, *, positions: torch.Tensor | None = None,
                cache: object = None, honor_padding: bool = True, skip_padding: bool = False) -> torch.Tensor:
        """emb (B, T, E) -> (B, T, hidden_size); position t sees positions <= t only."""
        refuse_cache("gatedcnn", cache)
        x = self._causal(emb.unsqueeze(1))  # (B, 1, T + k - 1, E)
        hidden = (self.conv_1(x) + self.conv_b1) * torch.sigmoid(self.gate_1(x) + self.gate_b1)  # (B, H, T, 1)
        residual = hidden
        for i, (conv, gate) in enumerate(zip(self.conv, self.gate)):
            x = self._causal(hidden)  # (B, H, T + k - 1, 1)
            hidden = (conv(x) + self.conv_b[i]) * torch.sigmoid(gate(x) + self.gate_b[i])  # (B, H, T, 1)
            if (i + 1) % self.block_size == 0:
                hidden = hidden + residual
                residual = hidden
        return hidden.squeeze(-1).transpose(1, 2)  # (B, T, H)
