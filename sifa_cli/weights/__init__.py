"""Model weights: the registry, the verified cache, our checkpoint format and reference imports.

- manifest:   named entries from weights/manifest.json and user manifests ($SIFA_MANIFEST, --manifest)
- cache:      where files live ($SIFA_HOME or the platform cache) and sha256 checks on every use
- download:   `fetch(entry)`: resumable, locked, verified downloads; offline mode ($SIFA_OFFLINE=1)
- checkpoint: safetensors checkpoints with metadata, safe `.pth` loading, `load_model`
- convert:    reference SIFA checkpoints -> sifa checkpoints
- verify:     end-to-end checks behind `sifa weights verify` and `info`

Kept free of imports so that `sifa weights download` does not pay for torch.
"""
