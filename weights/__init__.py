"""Shipped weights: the manifest and the small default model (installed as `sifa_cli.shipped`)."""
