"""Anomaly-detection methods: each composes nets, noise, diffusion and masking into a loss and a reconstruction."""
