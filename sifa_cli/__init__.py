"""sifa: video action recognition with SIFA (Stand-Alone Inter-Frame Attention in Video Models).

The Python API (`sifa_cli.predict`, `sifa_cli.load_model`) lives in `sifa_cli.api`; it is imported
on first use, so `import sifa_cli` stays light (the decode worker processes import it too).
"""

__version__ = "0.1.0"
__all__ = ["load_model", "predict", "__version__"]


def __getattr__(name: str):
    if name in ("load_model", "predict", "LoadedModel"):
        from sifa_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'sifa_cli' has no attribute {name!r}")
