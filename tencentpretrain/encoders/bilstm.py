"""The two-stack bidirectional LSTM encoder (config ``encoder: "bilstm"``), for the ``bilm`` target. See
``_recurrent``."""

from __future__ import annotations

from tencentpretrain.encoders._recurrent import TwoStackEncoder
from tencentpretrain.registry import ENCODERS


@ENCODERS.register("bilstm")
class BiLstmEncoder(TwoStackEncoder):
    """Forward and backward LSTM stacks. State keys ``encoder.rnn_forward.*``, ``encoder.rnn_backward.*``."""

    cell = "lstm"
