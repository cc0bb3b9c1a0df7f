"""Downstream fine-tuning and task inference: the original's ``finetune/run_*.py`` and ``inference/run_*_infer.py``.

A task is one module here (``classifier.py``, ...): its model (a ``TaskModel``: the pretrained embedding and
encoder, plus the original's head keys such as ``output_layer_1``), its reader (the original's TSV/JSON formats),
its evaluation (the original's report lines) and the ``main`` of its fine-tuning and inference scripts. What the
tasks share lives beside them: ``options.py`` (flags), ``model.py`` (backbone, pretrained and fine-tuned loading),
``data.py`` (readers, encoding, dynamic padding), ``loop.py`` (the epoch loop), ``metrics.py``, ``adversarial.py``
(FGM, PGD) and ``predict.py`` (batched prediction, prediction files).
"""
