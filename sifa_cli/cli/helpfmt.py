"""Help screens that say what each option takes.

Typer's rich help shows a type for every parameter, flags included (`--timeline <bool>`,
`--help <bool>`), and lists as `<list[str]>`. `tidy_help_types()` drops the type of flags, shows
a list argument as its element type followed by `...` and a repeatable option as its element type
(its help says it repeats). Older Typer versions already omit a flag's
type; there the patch changes nothing.
"""

from __future__ import annotations

import re

_LIST = re.compile(r"<list\[(\w+)\]>")
_patched = False


def _tidied(original, many: str):
    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False) or getattr(self, "count", False):
            return None
        text = original(self, ctx)
        if isinstance(text, str):
            text = _LIST.sub(lambda m: f"<{m.group(1).lower()}>{many}", text).replace("......", "...")
        return text

    return display_type_rich


def tidy_help_types() -> None:
    """Patch Typer's parameter classes once (no-op where they lack `display_type_rich`)."""
    global _patched
    if _patched:
        return
    _patched = True
    try:
        from typer.core import TyperArgument, TyperOption
    except ImportError:  # pragma: no cover - a Typer without these classes
        return
    for cls, many in ((TyperOption, ""), (TyperArgument, "...")):
        original = cls.__dict__.get("display_type_rich")
        if original is None:
            # inherited: patch on this class so the other one keeps its own
            original = getattr(cls, "display_type_rich", None)
        if original is not None:
            cls.display_type_rich = _tidied(original, many)
