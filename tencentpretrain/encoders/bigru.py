"""The two-stack bidirectional GRU encoder (config ``encoder: "bigru"``), for the ``bilm`` target. See
``_recurrent``."""

from __future__ import annotations

from tencentpretrain.encoders._recurrent import TwoStackEncoder
from tencentpretrain.registry import ENCODERS


@ENCODERS.register("bigru")
class BiGruEncoder(TwoStackEncoder):
    """Forward and backward GRU stacks. State keys ``encoder.rnn_forward.*``, ``encoder.rnn_backward.*``."""

    cell = "gru"
