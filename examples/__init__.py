"""Examples: the example clips (installed as `sifa_cli.examples`), the camera-movement corpus (camera/) and the synthetic motion generator."""
