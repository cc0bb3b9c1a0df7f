"""Generation: KV-cache decoding with continuous batching, sampling, UTF-8-safe streaming, quantization.

    from tencentpretrain.generation import GenerationConfig, SamplingParams, generate, stream
"""

from tencentpretrain.generation.engine import Engine, GenerationConfig, Request
from tencentpretrain.generation.generate import Completion, encode_prompt, generate, stream
from tencentpretrain.generation.sampling import SamplingParams

__all__ = ["Completion", "Engine", "GenerationConfig", "Request", "SamplingParams", "encode_prompt", "generate",
           "stream"]
