"""Examples: the example clip (installed as `sifa_cli.examples`) and the synthetic dataset generator."""
