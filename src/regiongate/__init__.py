"""regiongate: enforce where an API may be used from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["RegionGate", "__version__"]

if TYPE_CHECKING:
    from regiongate.enforce.middleware import RegionGate


def __getattr__(name: str) -> Any:
    # Lazy, so that `import regiongate` (the CLI, data tools) does not load the web stack.
    if name == "RegionGate":
        from regiongate.enforce.middleware import RegionGate

        return RegionGate
    raise AttributeError(name)
