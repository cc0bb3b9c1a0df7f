"""Vocabulary extension for Chinese: train a vocabulary (``build.py``), append it to a base SentencePiece model
(``merge.py``), resize a checkpoint's vocabulary rows (``resize.py``), check vocabulary sizes against a tokenizer
(``check.py``) and freeze the old rows while training (``freeze.py``). See docs/vocabulary.md.
"""
