"""What the recurrent encoders share (``rnn``/``lstm``/``gru`` and ``birnn``/``bilstm``/``bigru``; one file each).

They follow the original's modules exactly, state keys included:

* ``rnn``/``lstm``/``gru``: one torch stack ``encoder.rnn`` (``weight_ih_l{k}``, ``weight_hh_l{k}``, biases; with
  ``bidirectional: true`` also the ``_reverse`` ones, each direction ``hidden_size / 2`` wide), zero initial
  state, dropout between layers and on the output.
* ``birnn``/``bilstm``/``bigru``: two unidirectional stacks ``encoder.rnn_forward`` and ``encoder.rnn_backward``
  of ``hidden_size / 2`` each; the backward one reads the sequence reversed, and the two outputs are
  concatenated (forward first), as the ``bilm`` target expects.

Like the original they run over the padded batch as it is (no packing): with right padding the forward
direction of a real token never sees padding, the backward direction does.
"""

from __future__ import annotations

import torch
from torch import nn

from tencentpretrain.config import ModelConfig
from tencentpretrain.errors import ConfigError
from tencentpretrain.layers.dropout import Dropout

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def half_hidden_size(config: ModelConfig, encoder: str) -> int:
    """Width of one direction of a two-direction encoder."""
    if config.hidden_size % 2:
        raise ConfigError(f"encoder {encoder!r} splits hidden_size between two directions: it must be even, "
                          f"got {config.hidden_size}")
    return config.hidden_size // 2


def recurrent_stack(cell: str, config: ModelConfig, hidden_size: int, *, bidirectional: bool) -> nn.RNNBase:
    """A batch-first torch RNN/LSTM/GRU of ``layers_num`` layers from ``emb_size`` inputs."""
    return CELLS[cell](input_size=config.emb_size, hidden_size=hidden_size, num_layers=config.layers_num,
                       dropout=config.dropout if config.layers_num > 1 else 0.0, batch_first=True,
                       bidirectional=bidirectional)


def refuse_cache(name: str, cache: object) -> None:
    if cache is not None:
        raise ConfigError(f"encoder {name!r} has no KV cache: generate with a transformer model")


class RecurrentEncoder(nn.Module):
    """``rnn``/``lstm``/``gru``: one (optionally bidirectional) stack. State keys ``encoder.rnn.*``."""

    cell = "rnn"
    uses_attention = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        bidirectional = config.bidirectional
        width = half_hidden_size(config, self.cell) if bidirectional else config.hidden_size
        self.rnn = recurrent_stack(self.cell, config, width, bidirectional=bidirectional)
        self.drop = Dropout(config.dropout)

    def forward(self, emb: torch.Tensor, seg: torch.Tensor, *, positions: torch.Tensor | None = None,
                cache: object = None, honor_padding: bool = True, skip_padding: bool = False) -> torch.Tensor:
        """emb (B, T, E) -> (B, T, hidden_size); ``seg`` and the transformer's options are not used."""
        refuse_cache(self.cell, cache)
        output, _ = self.rnn(emb)  # zero initial state, as the original's init_hidden
        return self.drop(output)


class TwoStackEncoder(nn.Module):
    """``birnn``/``bilstm``/``bigru``: a forward and a backward stack, outputs concatenated.
    State keys ``encoder.rnn_forward.*``, ``encoder.rnn_backward.*``."""

    cell = "rnn"
    uses_attention = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = half_hidden_size(config, f"bi{self.cell}")
        self.rnn_forward = recurrent_stack(self.cell, config, width, bidirectional=False)
        self.rnn_backward = recurrent_stack(self.cell, config, width, bidirectional=False)
        self.drop = Dropout(config.dropout)

    def forward(self, emb: torch.Tensor, seg: torch.Tensor, *, positions: torch.Tensor | None = None,
                cache: object = None, honor_padding: bool = True, skip_padding: bool = False) -> torch.Tensor:
        """emb (B, T, E) -> (B, T, hidden_size): [forward states, backward states] on the last axis."""
        refuse_cache(f"bi{self.cell}", cache)
        forward, _ = self.rnn_forward(emb)  # (B, T, H/2)
        backward, _ = self.rnn_backward(emb.flip(1))  # (B, T, H/2), in reversed time
        return torch.cat([self.drop(forward), self.drop(backward).flip(1)], dim=2)
