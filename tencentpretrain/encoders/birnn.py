"""The two-stack bidirectional RNN encoder (config ``encoder: "birnn"``), for the ``bilm`` target. See
``_recurrent``."""

from __future__ import annotations

from tencentpretrain.encoders._recurrent import TwoStackEncoder
from tencentpretrain.registry import ENCODERS


@ENCODERS.register("birnn")
class BiRnnEncoder(TwoStackEncoder):
    """Forward and backward RNN stacks. State keys ``encoder.rnn_forward.*``, ``encoder.rnn_backward.*``."""

    cell = "rnn"
