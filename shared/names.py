"""The rule for a source's name (`crm`, `forum-eu`), written once: a person's `source` in events
and paths, the sources an API key is bound to, ROAC_IDENTITY_VERIFIED_SOURCES. Lower case, so
one integration is never two sources by spelling; at most 64 characters."""

from __future__ import annotations

import re

SOURCE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
SOURCE_NAME = re.compile(SOURCE_PATTERN)
