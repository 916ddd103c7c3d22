"""The Berth gateway: one entry point for every model (``berth-runtime gateway``).

| module | layer | does |
|---|---|---|
| `paths.py` | pure | path -> protocol, namespace prefix, model name (or "read it from the body") |
| `routing.py` | pure | ModelDeployments + EndpointSlices -> routing table; resolve a name; pick an endpoint |
| `holding.py` | state | per-model holds while a model has no ready endpoint (caps, wake-up events) |
| `settings.py` | config | `GatewaySettings` from `BERTH_GATEWAY_*` |
| `metrics.py` | metrics | `berth_gateway_*` series per model |
| `discovery.py` | client | list + watch ModelDeployments and EndpointSlices (lightkube) |
| `wake.py` | client | patch `/scale` from zero, post the `WokenByGateway` Event |
| `upstream.py` | client | lean HTTP/1.1 client: keep-alive pool per endpoint, streamed bodies, "was it sent?" |
| `proxy.py` | engine | the raw ASGI app: route, hold, forward, relay the stream |
| `server.py`, `cli.py` | entry | uvicorn + discovery in one event loop; flags |

Nothing runs at import time.
"""
