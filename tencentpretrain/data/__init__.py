"""Data pipeline: processors (``processors/``), prompt/chat templates (``templates.py``), the on-disk dataset
format (``dataset.py``), the preprocessing driver (``builder.py``) and the training loader (``loader.py``).

See docs/data.md for the format and the flags.
"""
