"""Transforms applied to a built model, never flags in a model's ``__init__``: LoRA (``lora.py``), inference
fusion and quantization (``quantize.py``), activation checkpointing (``activation_checkpointing.py``).

This package sits below training and generation, which both apply them.
"""
