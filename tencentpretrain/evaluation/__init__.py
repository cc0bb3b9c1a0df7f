"""Evaluation: perplexity and bits per character (``perplexity``), C-Eval/CMMLU-style multiple choice
(``multiple_choice``, subject tables in ``subjects``), side-by-side generation reports (``generation_report``).

Entry points: ``scripts/evaluate_ppl.py``, ``scripts/evaluate_choice.py``, ``scripts/evaluate_generation.py``;
guide: docs/evaluation.md. The trainer's evaluation calls ``perplexity.evaluate_dataset_loss``.
"""
