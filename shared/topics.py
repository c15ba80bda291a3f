"""One spelling per topic, so "Social Customer Service" and " social  customer service" are one."""

import unicodedata

MAX_TOPIC_LENGTH = 200


def normalize_topic(raw: str) -> str:
    """Unicode NFC, case-folded, whitespace collapsed to single spaces and trimmed."""
    folded = unicodedata.normalize("NFC", raw).casefold()
    return " ".join(folded.split())
