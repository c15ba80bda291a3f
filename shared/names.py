"""Names roac checks in several places, each rule written once.

A source's name (`crm`, `forum-eu`): a person's `source` in events and paths, the sources an API
key is bound to, ROAC_IDENTITY_VERIFIED_SOURCES. Lower case, so one integration is never two
sources by spelling; at most 64 characters.

An API key's name (the integration, `crm-sync`): in events, metric labels, the keys API's paths
and bodies, and the api_keys table's CHECK."""

from __future__ import annotations

import re

SOURCE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
SOURCE_NAME = re.compile(SOURCE_PATTERN)

KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
KEY_NAME = re.compile(KEY_NAME_PATTERN)
