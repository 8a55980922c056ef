"""The `sifa` command line: one thin module per command, registered in main.py."""
