import pytest

from tencentpretrain.errors import UnknownComponentError
from tencentpretrain.registry import ACTIVATIONS, EMBEDDINGS, ENCODERS, FEEDFORWARDS, LAYERNORMS, TARGETS, Registry


def test_builtin_components_are_registered():
    assert {"word", "pos", "seg"} <= set(EMBEDDINGS.names())
    assert "transformer" in ENCODERS.names()
    assert "lm" in TARGETS.names()
    assert set(LAYERNORMS.names()) >= {"rms", "t5", "normal"}
    assert set(FEEDFORWARDS.names()) >= {"gated", "dense"}
    assert set(ACTIVATIONS.names()) >= {"gelu", "gelu_fast", "relu", "silu", "linear"}


def test_duplicate_name_is_an_error():
    registry = Registry("widget")
    registry.register("a")(int)
    with pytest.raises(ValueError, match="duplicate widget 'a'"):
        registry.register("a")(float)


def test_unknown_name_lists_close_matches_and_everything_registered():
    registry = Registry("widget")
    for name in ("transformer", "rnn", "lstm"):
        registry.register(name)(object)
    with pytest.raises(UnknownComponentError) as info:
        registry.get("transfromer")
    message = str(info.value)
    assert "did you mean 'transformer'" in message
    assert "registered: lstm, rnn, transformer" in message
