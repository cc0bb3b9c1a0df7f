"""The GRU encoder (config ``encoder: "gru"``; ``bidirectional: true`` for both directions). See ``_recurrent``."""

from __future__ import annotations

from tencentpretrain.encoders._recurrent import RecurrentEncoder
from tencentpretrain.registry import ENCODERS


@ENCODERS.register("gru")
class GruEncoder(RecurrentEncoder):
    """A GRU stack of ``layers_num`` layers. State keys ``encoder.rnn.*`` (torch's GRU names)."""

    cell = "gru"
