"""Evaluation: AP@0.5 on any labelled dataset and the official WIDER FACE protocol."""

from mobilekit.evaluation.ap import evaluate_dataset

__all__ = ["evaluate_dataset"]
