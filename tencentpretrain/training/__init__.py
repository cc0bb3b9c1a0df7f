"""Training: ``train(run)`` (trainer.py) over typed run configs (config.py), process glue (parallel.py,
deepspeed_glue.py), resume-safe checkpoints (checkpointing.py), registered optimizers and schedules.
See docs/training.md."""
