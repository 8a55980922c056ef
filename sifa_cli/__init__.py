"""sifa: video action recognition with SIFA (Stand-Alone Inter-Frame Attention in Video Models)."""

__version__ = "0.1.0"
