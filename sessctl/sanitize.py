"""Secrets and personal data out of text before it is stored. Pure functions.

Interface used by the rest of sessctl (keep it stable):

    sanitizer = Sanitizer.from_config(cfg.sanitize)   # the raw [sanitize] table
    clean, counts = sanitizer.sanitize(text)          # counts: {rule_name: n}, empty when clean
    sanitizer.outbound                                # bool: also redact what goes to the provider

Matches become `[REDACTED:<rule>]`. Sanitizing already-sanitized text changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Sanitizer:
    """Placeholder until the rule set lands: redacts nothing."""

    def __init__(self, *, outbound: bool = False) -> None:
        self.outbound = outbound

    @classmethod
    def from_config(cls, table: Mapping[str, Any] | None) -> Sanitizer:
        return cls(outbound=bool((table or {}).get("outbound", False)))

    def sanitize(self, text: str) -> tuple[str, dict[str, int]]:
        return text, {}
