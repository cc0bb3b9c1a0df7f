"""The LSTM encoder (config ``encoder: "lstm"``; ``bidirectional: true`` for both directions). See ``_recurrent``."""

from __future__ import annotations

from tencentpretrain.encoders._recurrent import RecurrentEncoder
from tencentpretrain.registry import ENCODERS


@ENCODERS.register("lstm")
class LstmEncoder(RecurrentEncoder):
    """A LSTM stack of ``layers_num`` layers. State keys ``encoder.rnn.*`` (torch's LSTM names)."""

    cell = "lstm"
