"""Evaluation protocol: post-processing, metrics, threshold rules and the ``evaluate`` pipeline."""
