"""The RNN encoder (config ``encoder: "rnn"``; ``bidirectional: true`` for both directions). See ``_recurrent``."""

from __future__ import annotations

from tencentpretrain.encoders._recurrent import RecurrentEncoder
from tencentpretrain.registry import ENCODERS


@ENCODERS.register("rnn")
class RnnEncoder(RecurrentEncoder):
    """A RNN stack of ``layers_num`` layers. State keys ``encoder.rnn.*`` (torch's RNN names)."""

    cell = "rnn"
