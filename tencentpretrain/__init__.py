"""TencentPretrain: plugin-based pretraining, instruction tuning and serving of LLaMA-family models."""

__version__ = "0.1.0"
