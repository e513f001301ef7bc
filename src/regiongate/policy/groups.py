"""Built-in named groups of territories, usable in any policy as ``@name``."""

from __future__ import annotations

from typing import Final

__all__ = ["BUILTIN_GROUPS"]

BUILTIN_GROUPS: Final[dict[str, tuple[str, ...]]] = {
    # The regions of Ukraine under Russian occupation since 2014 (ISO 3166-2 codes).
    "occupied-ua": ("UA-43", "UA-40", "UA-14", "UA-09"),
    # The same plus the oblasts Russia claimed in 2022.
    "occupied-ua-2022": ("UA-43", "UA-40", "UA-14", "UA-09", "UA-23", "UA-65"),
    # Comprehensively sanctioned jurisdictions (US OFAC country programs as of 2024).
    "comprehensive-sanctions": ("CU", "IR", "KP", "SY", "UA-43", "UA-40", "UA-14", "UA-09"),
    # European Union member states (2024).
    "eu": (
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
    ),
}  # fmt: skip
