"""The label-free routing gateway: an OpenAI-compatible server in front of several models.

- ``config``: backends and settings, from flags and a YAML file, validated at the edge.
- ``protocol``: the OpenAI request checks, the input text of a request, and error bodies.
- ``store``: the SQLite store of fanned-out requests and their embeddings (survives restarts).
- ``policy``: the routing decisions (fanout, select, local), shared by the server and ``src.replay``.
- ``backends``: calls to the backends over HTTP, with timeouts and a cool-down for failing ones.
- ``metrics``: the Prometheus counters and histograms behind ``/metrics``.
- ``app``: the ASGI application that ties them together; ``src.serve`` runs it.
"""
