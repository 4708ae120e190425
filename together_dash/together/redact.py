"""Scrub API keys and bearer tokens out of text before it is logged, stored or shown."""
from __future__ import annotations

import re

REDACTED = "[redacted]"

# Together keys are 64 hex characters (classic) or start with "tgp_"; ours start with "tdk_" / "tdo_".
_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    # key=value / "key": "value" pairs; the value must look like a credential (12+ characters) so prose such
    # as "Invalid API key: check it" stays readable.
    re.compile(r"(?i)((?:api[_-]?key|authorization|token|secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]{12,}"),
    re.compile(r"\btgp_[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\btd[ko]_[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"),
    re.compile(r"\b[0-9a-f]{64}\b"),
    # A Slack incoming-webhook URL is a credential: its path is the token.
    re.compile(r"(?i)(hooks\.slack\.com/)[^\s\"'<>]+"),
]


# One pass that finds whether any pattern could match: most texts (error messages) hold no secret, and
# for them this is the only scan. The patterns' inline (?i) flags are scoped so they can be joined.
_ANY = re.compile("|".join(
    f"(?i:{pattern.pattern[4:]})" if pattern.pattern.startswith("(?i)") else f"(?:{pattern.pattern})"
    for pattern in _PATTERNS
))


def redact(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """Return text with known secret shapes and the given literal secrets replaced."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    if not _ANY.search(text):
        return text
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text
