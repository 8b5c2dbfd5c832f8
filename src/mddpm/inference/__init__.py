"""Inference: anomaly maps of dataset splits (``predict``), scores (``scores``), one new scan (``detect``)."""
