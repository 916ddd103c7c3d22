"""A thin async client for Prometheus' HTTP API: one instant query, with a timeout.

The timeout is sent to Prometheus (`timeout=` of /api/v1/query), so that a heavy query
is abandoned by Prometheus itself, not only by this client; the client waits a little
longer (MARGIN) so that Prometheus' own "query timed out" answer arrives.

Two outcomes besides a vector, so that callers never mistake a failure for zero:
`Unavailable` (down, slow, 5xx, an answer that is not Prometheus JSON) and `BadQuery`
(Prometheus refused the query: parse or execution error, or a result that is not an
instant vector).
"""

from __future__ import annotations

from typing import Any

import httpx

MARGIN = 0.5  # seconds the client waits past the timeout sent to Prometheus


class QueryFailed(Exception):
    """Base: the query gave no vector."""


class Unavailable(QueryFailed):
    """Prometheus could not be asked or did not answer usefully: metrics are unavailable."""


class BadQuery(QueryFailed):
    """Prometheus answered that the query itself is wrong."""


class Prometheus:
    def __init__(self, url: str, timeout: float = 1.5, client: httpx.AsyncClient | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout + MARGIN))

    async def close(self) -> None:
        await self._client.aclose()

    async def vector(self, query: str) -> list[dict[str, Any]]:
        """The instant vector of `query` now; raises Unavailable or BadQuery."""
        if not self.url:
            raise Unavailable(
                "no Prometheus URL configured (BERTH_OPERATOR_AUTOSCALING_PROMETHEUS_URL)"
            )
        try:
            resp = await self._client.post(
                f"{self.url}/api/v1/query",
                data={"query": query, "timeout": repr(float(self.timeout))},  # seconds
                timeout=self.timeout + MARGIN,
            )
        except httpx.TimeoutException:
            raise Unavailable(
                f"Prometheus at {self.url} did not answer within {self.timeout + MARGIN:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach Prometheus at {self.url}: {exc!r}") from None
        try:
            body = resp.json()
        except ValueError:
            raise Unavailable(
                f"Prometheus at {self.url} answered HTTP {resp.status_code} that is not JSON: "
                f"{resp.text[:80]!r}"
            ) from None
        if not isinstance(body, dict):
            raise Unavailable(f"Prometheus at {self.url} answered JSON that is not an object")
        if body.get("status") != "success":
            error = str(body.get("error") or f"HTTP {resp.status_code}")
            if body.get("errorType") == "timeout" or "context deadline exceeded" in error:
                raise Unavailable(
                    f"Prometheus at {self.url} abandoned the query after the timeout of "
                    f"{self.timeout:g} s (BERTH_OPERATOR_AUTOSCALING_QUERY_TIMEOUT): {error}"
                )
            if resp.status_code in (400, 422) or body.get("errorType") in ("bad_data", "execution"):
                raise BadQuery(error)
            raise Unavailable(f"Prometheus at {self.url}: {error}")
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise Unavailable(f"Prometheus at {self.url} answered without data.result")
        if data.get("resultType") != "vector":
            raise BadQuery(f"the query returned a {data.get('resultType')}, not an instant vector")
        return [s for s in data["result"] if isinstance(s, dict)]
