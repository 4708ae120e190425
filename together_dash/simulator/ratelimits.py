"""Per-key request and token budgets that really decrement and reset, and the headers that report them."""

from __future__ import annotations

from together_dash.simulator.scenario import RateLimit

REQUEST_LIMITED = "dynamic_request_limited"
TOKEN_LIMITED = "dynamic_token_limited"  # noqa: S105 - a limiter name, not a secret


class KeyBudget:
    """A fixed window per key: the window opens on the first request and lasts `window_s` seconds."""

    __slots__ = ("limit", "window_start", "requests", "tokens")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.window_start = now
        self.requests = 0
        self.tokens = 0

    def _roll(self, now: float) -> None:
        if now >= self.window_start + self.limit.window_s:
            self.window_start = now
            self.requests = 0
            self.tokens = 0

    def admit(self, now: float) -> str | None:
        """Count one request; return the limiter kind when it is over budget (the request is not counted)."""
        self._roll(now)
        if self.requests >= self.limit.requests:
            return REQUEST_LIMITED
        self.requests += 1
        return None

    def charge_tokens(self, tokens: int, now: float) -> str | None:
        """Take `tokens` from the budget, or return the limiter kind when they do not fit."""
        self._roll(now)
        if self.tokens + tokens > self.limit.tokens:
            return TOKEN_LIMITED
        self.tokens += tokens
        return None

    def reset_after(self, now: float) -> float:
        return max(0.0, self.window_start + self.limit.window_s - now)

    def headers(self, now: float) -> list[tuple[bytes, bytes]]:
        limit = self.limit
        return [
            (b"x-ratelimit-limit", str(limit.requests).encode()),
            (b"x-ratelimit-remaining", str(max(0, limit.requests - self.requests)).encode()),
            (b"x-ratelimit-reset", f"{self.reset_after(now):.3f}".encode()),
            (b"x-tokenlimit-limit", str(limit.tokens).encode()),
            (b"x-tokenlimit-remaining", str(max(0, limit.tokens - self.tokens)).encode()),
        ]


class RateLimiter:
    """All keys' budgets; the limit for a key comes from the active scenario."""

    def __init__(self) -> None:
        self._budgets: dict[str, KeyBudget] = {}

    def budget(self, key: str, limit: RateLimit, now: float) -> KeyBudget:
        budget = self._budgets.get(key)
        if (
            budget is None or budget.limit is not limit
        ):  # identity: cheap, and a new scenario makes new limits
            budget = self._budgets[key] = KeyBudget(limit, now)
        return budget

    def clear(self) -> None:
        self._budgets.clear()
