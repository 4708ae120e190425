"""Every route of the URLconf with a concrete path that resolves to it: the crawl of the security suite."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.urls import URLPattern, URLResolver, converters, get_resolver, resolve
from django.urls.resolvers import RegexPattern, RoutePattern

# A plausible value for each path converter; a new converter type fails the crawl until it has one.
SAMPLES = {
    converters.IntConverter: "1",
    converters.StringConverter: "sample",
    converters.SlugConverter: "sample",
    converters.PathConverter: "1",
    converters.UUIDConverter: "00000000-0000-4000-8000-000000000001",
}
REGEX_CANDIDATES = ("1", "sample", "")


@dataclass(frozen=True)
class Route:
    route: str  # the pattern as written, e.g. "keys/app/<int:key_id>/rotate"
    path: str  # a URL that resolves to it, e.g. "/keys/app/1/rotate"
    name: str | None  # with its namespace, e.g. "admin:keys_appkey_change"
    callback: Any


def routes(
    patterns: list | None = None, prefix: str = "/", route: str = "", namespace: str = ""
) -> Iterator[Route]:
    """Walk the resolver recursively, filling every converter and regex group with a sample."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        part = _fill(entry.pattern)
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from routes(entry.url_patterns, prefix + part, route + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            name = f"{namespace}{entry.name}" if entry.name else None
            yield Route(route + str(entry.pattern), prefix + part, name, entry.callback)


def _fill(pattern: RoutePattern | RegexPattern) -> str:
    if isinstance(pattern, RoutePattern):
        text = str(pattern)
        for key, converter in pattern.converters.items():
            sample = SAMPLES[type(converter)]
            text = re.sub(rf"<(?:\w+:)?{key}>", sample, text)
        return text
    named_group = r"\(\?P<\w+>((?:[^()]|\([^()]*\))*)\)"
    text = re.sub(named_group, lambda group: _regex_sample(group[1]), pattern.regex.pattern)
    text = text.removeprefix("^").removesuffix("$").removesuffix(r"\Z")
    assert not re.search(r"[()\[\]*+?\\|{}^$]", text), f"cannot fill the regex route {pattern}"
    return text


def _regex_sample(inner: str) -> str:
    """A value the group accepts: one of its alternatives, or a short id."""
    alternatives = inner.split("|") if re.fullmatch(r"[\w|]+", inner) else []
    candidates = [*alternatives, *REGEX_CANDIDATES]
    return next(candidate for candidate in candidates if re.fullmatch(inner, candidate))


def crawl() -> list[Route]:
    """Every route, each checked to resolve back to its own view (so the sample really reaches it)."""
    found = list(routes())
    for each in found:
        assert resolve(each.path).func == each.callback, f"{each.path} does not resolve to {each.route}"
    return found
