"""Datasets: the on-disk format, verification, import, synthesis, preparation and slice sampling."""
