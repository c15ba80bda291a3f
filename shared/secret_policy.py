"""Which secrets roac accepts: plain Python, no I/O.

A deployment left at a documented placeholder signs its links with a key the whole internet can
read, so every secret a process is given is checked before the process serves anything, and a
refused one stops it with the setting's name and the reason, never the value. Two rules:

- Secrets roac makes (link keys, the webhook signing key, the erasure key, the console's
  session key, API keys): `weakness`, which refuses placeholders and low-entropy values.
  `roac secrets generate` and `roac keys create` make secrets that pass (`new_secret`).
- Secrets someone else makes (the passwords in ROAC_AMQP_URL and ROAC_DATABASE_URL, the SMTP
  password, Slack's and Matrix's tokens): `placeholder_reason`, which refuses only what an
  example told the deployer to replace (`change-me`, `replace-me`, `xoxb-your-token`, ...).
  Their strength is their issuer's business, and the development defaults (RabbitMQ's
  guest:guest, a password-less local PostgreSQL) are not placeholders.

The check is deliberately conservative rather than clever: a secret from `new_secret`
(256 random bits, 43 base64url characters) passes with a wide margin, and what fails is what a
human typed: known placeholders and the words they are made of, short strings, strings built
from few distinct characters, and runs like `0123456789` or `aaaaaa`.
"""

from __future__ import annotations

import itertools
import math
import re
import secrets
from collections import Counter
from urllib.parse import parse_qs, unquote, urlsplit

MIN_LENGTH = 32
# Estimated bits: length times the per-character Shannon entropy of the string itself. A random
# base64url string of 32 characters scores about 150; English words and repeats score far less.
MIN_ESTIMATED_BITS = 128.0
MIN_DISTINCT_CHARACTERS = 12
LONGEST_RUN = 5  # ascending, descending or repeated characters in a row
REPEATED_SEQUENCE = 8  # a sequence this long appearing twice: a pattern, not randomness

# Exact values shipped in examples at some point (compose, k8s, docs, tests).
KNOWN_PLACEHOLDERS = frozenset(
    {
        "compose-development-secret-change-me-0123456789",
        "replace-with-at-least-32-random-characters",
        "replace-with-a-long-random-secret",
        "test-secret-key-for-signed-links-0123456789",
        "test-integration-secret-0123456789",
    }
)
# Words a generated secret practically never contains (five or more letters of an English word
# in 43 random base64url characters: about one in 10^6 per position for a given word).
PLACEHOLDER_WORDS = (
    "change",
    "replace",
    "placeholder",
    "example",
    "secret",
    "password",
    "passwd",
    "default",
    "insecure",
    "development",
    "letmein",
    "qwerty",
)


# Wherever a value is not roac's to choose: its text, lower-cased with everything but letters and
# digits dropped, containing one of these is a placeholder. Eight letters or more, so a random
# token (base62: one chance in about 10^12 a position) practically never contains one.
PLACEHOLDER_MARKERS = (
    "changeme",
    "changeit",
    "changethis",
    "replaceme",
    "replacewith",
    "replacethis",
    "placeholder",
    "insertyour",
)
# `your-token`, `xoxb-your-bot-token`, `<your SMTP password>`: an example's words for a value,
# and nothing else (a passphrase that merely holds "your...key" is somebody's real one).
_YOUR_VALUE = re.compile(
    r"(xox[a-z]|xapp|syt)?your(bot|app|user|access|api|matrix|slack|smtp|mail)*"
    r"(token|password|secret|key)(here)?"
)
# ... or equal to one of these (whole values typed into examples).
PLACEHOLDER_VALUES = frozenset({"password", "passwd", "secret", "example", "todo", "tbd"})
# A provider's prefix (Slack's xoxb-, Matrix's syt_) followed by nothing or one character over
# and over (`xoxb-xxxx-xxxx`, `syt_...`) is an example's elided token.
_PROVIDER_PREFIX = re.compile(r"^(xox[a-z]-|xapp-|syt_|syt-)", re.IGNORECASE)


def placeholder_reason(value: str) -> str | None:
    """Why `value` is a placeholder someone was told to replace, or None when it is not."""
    if value in KNOWN_PLACEHOLDERS:
        return "it is a placeholder published in roac's examples"
    letters = re.sub(r"[^0-9a-z]", "", value.lower())
    for marker in PLACEHOLDER_MARKERS:
        if marker in letters:
            return "it is a placeholder an example says to replace"
    if _YOUR_VALUE.fullmatch(letters):
        return "it is a placeholder (it says whose value goes there)"
    if letters in PLACEHOLDER_VALUES:
        return "it is a placeholder (a word examples use)"
    # Only after a provider's prefix: a password of symbols or in another script has no
    # letters of [0-9a-z] at all and is somebody's real one.
    prefix = _PROVIDER_PREFIX.match(value)
    if prefix is not None:
        elided = re.sub(r"[^0-9a-z]", "", value[prefix.end() :].lower())
        if len(set(elided)) <= 1:
            return "it is a placeholder (no token after the prefix, or one character repeated)"
    elif value and len(set(value)) == 1:
        return "it is a placeholder (one character repeated)"
    return None


def require_not_placeholder(setting: str, value: str, remedy: str) -> str:
    """`value`, or a ValueError naming the setting, the reason and `remedy` (how to get a real
    one); never the value."""
    reason = placeholder_reason(value)
    if reason is not None:
        raise ValueError(f"{setting} is refused: {reason}. {remedy}")
    return value


def url_password_placeholder(url: str) -> str | None:
    """Why the password in `url` (its user info, or a `password=` query parameter) is a
    placeholder, or None: no password (a local PostgreSQL) or a real one (`guest` included)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL at all: connecting reports that, not this check
        return None
    passwords = [unquote(parts.password or ""), *parse_qs(parts.query).get("password", [])]
    for password in passwords:
        if password and (reason := placeholder_reason(password)):
            return f"its password {reason.removeprefix('it ')}"
    return None


def new_secret() -> str:
    """256 random bits, base64url: what `roac secrets generate` prints."""
    return secrets.token_urlsafe(32)


def estimated_bits(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    per_char = -sum(c / n * math.log2(c / n) for c in counts.values())
    return per_char * n


def _longest_run(value: str) -> int:
    longest = run_up = run_down = run_same = 1
    for prev, cur in itertools.pairwise(value):
        step = ord(cur) - ord(prev)
        run_up = run_up + 1 if step == 1 else 1
        run_down = run_down + 1 if step == -1 else 1
        run_same = run_same + 1 if step == 0 else 1
        longest = max(longest, run_up, run_down, run_same)
    return longest if value else 0


def _repeats(value: str, size: int) -> bool:
    seen: set[str] = set()
    for start in range(len(value) - size + 1):
        chunk = value[start : start + size]
        if chunk in seen:
            return True
        seen.add(chunk)
    return False


def weakness(value: str) -> str | None:
    """Why `value` is not an acceptable secret, or None when it is."""
    if value in KNOWN_PLACEHOLDERS:
        return "it is a placeholder published in roac's examples"
    lowered = value.lower()
    for word in PLACEHOLDER_WORDS:
        if word in lowered:
            return f"it contains the word {word!r}, as placeholders do"
    if len(value) < MIN_LENGTH:
        return f"it is shorter than {MIN_LENGTH} characters"
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return f"it uses fewer than {MIN_DISTINCT_CHARACTERS} distinct characters"
    if _longest_run(value) > LONGEST_RUN:
        return "it contains a run of sequential or repeated characters"
    if _repeats(value, REPEATED_SEQUENCE):
        return f"it repeats a sequence of {REPEATED_SEQUENCE} characters"
    if estimated_bits(value) < MIN_ESTIMATED_BITS:
        return f"it has an estimated {estimated_bits(value):.0f} bits of entropy (at least 128)"
    return None


GENERATE = "Generate one with `roac secrets generate`."


def require_strong(setting: str, value: str, remedy: str = GENERATE) -> str:
    """`value`, or a ValueError naming the setting, the reason and how to make a good one
    (`remedy`); never the value."""
    reason = weakness(value)
    if reason is not None:
        raise ValueError(f"{setting} is refused: {reason}. {remedy}")
    return value


# Slack generates each app's signing secret itself: 32 hex digits (128 random bits), which the
# rule above (128 estimated bits from the string's own letter counts, that is at most 4 bits a
# character) would refuse about half the time. Such a value is accepted when it looks like what
# Slack makes, not like what a human typed (a run, a repeat, a handful of digits).
SLACK_SIGNING_SECRET = re.compile(r"[0-9a-f]{32}")


def slack_signing_secret_weakness(value: str) -> str | None:
    """Why `value` is not an acceptable ROAC_SLACK_SIGNING_SECRET, or None when it is: Slack's
    own 32 hex digits, or any secret `weakness` accepts."""
    if not SLACK_SIGNING_SECRET.fullmatch(value):
        return weakness(value)
    if len(set(value)) < 8:
        return "it uses fewer than 8 distinct hex digits, unlike a secret Slack generated"
    if _longest_run(value) > 7:
        return "it contains a run of sequential or repeated characters"
    if _repeats(value, 10):
        return "it repeats a sequence of 10 characters"
    if estimated_bits(value) < 80:
        return f"it has an estimated {estimated_bits(value):.0f} bits of entropy (at least 80)"
    return None
