"""Serve an OpenAI-compatible gateway that routes each request among live models with Smoothie.

    python -m src.serve --backend a=http://127.0.0.1:8081/v1 --backend b=... --backend c=... \\
                        [--config gateway.yaml] [--policy fanout|select|local] [--port 8000]

A request whose ``model`` names a backend goes to it alone; any other ``model`` is routed, and
the response says which backend answered (``model``) and why (the ``smoothie`` object). See
docs/serving.md and ``src.gateway``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from src import cli
from src.embedding_backends import BACKENDS as EMBEDDING_BACKENDS
from src.embeddings import Embedder
from src.gateway import config
from src.gateway.app import create_app
from src.route import add_precision_flag

# flag -> Settings field, for the flags that override the YAML file
_SETTINGS_FLAGS = ("policy", "explore", "k", "warmup", "window", "seed", "embedding_model", "store",
                   "store_max_rows", "host", "port", "api_key_env", "timeout", "max_failures", "cooldown",
                   "max_body_bytes", "router_name")


# The gateway embeds on every fanned-out request, so there embedding time is latency: bf16 is its
# default where docs/scale.md's benchmark shows the same picks as fp32 (the batch commands keep
# fp32, whose weights match the authors' to 1e-6). src.replay follows the server.
SERVE_PRECISION = "bf16"

def build_parser():
    p = cli.parser("src.serve", "OpenAI-compatible gateway that routes among live models with Smoothie (no labels).")
    p.add_argument("--backend", action="append", default=None, metavar="NAME=BASE_URL[,model=ID][,key_env=VAR]",
                   help="an OpenAI-compatible backend (3 or more; BASE_URL ends in /v1); adds to --config's")
    p.add_argument("--config", default=None, help="YAML file with the same settings (flags override it)")
    p.add_argument("--policy", choices=config.POLICIES, default=None,
                   help="fanout: ask all, return Smoothie's pick; select: one call to the best Global backend; "
                        "local: one call to the best Local backend for this input (default: fanout)")
    p.add_argument("--explore", type=float, default=None, help="share of select/local requests that fan out "
                   "(default: 0.1)")
    p.add_argument("--k", type=cli.positive_int, default=None, help="neighbours for Smoothie-Local (default: 20)")
    p.add_argument("--warmup", type=cli.non_negative_int, default=None,
                   help="select/local fan out until the store holds this many fan-outs (default: k)")
    p.add_argument("--window", type=cli.positive_int, default=None,
                   help="select's Global weights use the last N stored fan-outs (default: 1000)")
    p.add_argument("--seed", type=int, default=None, help="seed of the explore draws (default: 0)")
    p.add_argument("--embedding_model", default=None, help="sentence-transformers short name, hub id or local "
                   "folder (default: all-mpnet-base-v2)")
    p.add_argument("--embedding_backend", choices=EMBEDDING_BACKENDS, default="torch", help="embedder runtime")
    add_precision_flag(p, SERVE_PRECISION)
    p.add_argument("--clean", action="store_true", default=None,
                   help="embed only each answer's first line, as the batch commands do for short-answer tasks "
                        "(default: whole answers)")
    p.add_argument("--store", default=None, help="SQLite file of fanned-out requests (default: "
                   "smoothie_gateway.sqlite)")
    p.add_argument("--store_max_rows", type=cli.positive_int, default=None,
                   help="fan-outs kept; the oldest tenth goes when full (default: 100000)")
    p.add_argument("--host", default=None, help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: 8000)")
    p.add_argument("--api_key_env", default=None, help="environment variable holding the key clients must send "
                   "as 'Authorization: Bearer ...' (default: no key)")
    p.add_argument("--timeout", type=float, default=None, help="seconds a backend may take (default: 60)")
    p.add_argument("--max_failures", type=cli.positive_int, default=None,
                   help="failures in a row before a backend cools down (default: 3)")
    p.add_argument("--cooldown", type=float, default=None, help="seconds a failing backend is skipped "
                   "(default: 30)")
    p.add_argument("--max_body_bytes", type=cli.positive_int, default=None, help="largest request body "
                   "(default: 1 MiB)")
    p.add_argument("--router_name", default=None, help="the routed model's id in /v1/models (default: smoothie)")
    return p


def settings_from_args(args) -> config.Settings:
    overrides = {name: getattr(args, name) for name in _SETTINGS_FLAGS}
    overrides["clean"] = args.clean
    return config.load(args.config, overrides, args.backend or [])


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    import uvicorn

    embedder = Embedder(settings.embedding_model, show_progress=False, backend=args.embedding_backend,
                        one_per_pass=True, precision=args.embedding_precision)
    embedder.dimension()  # load the model now (or fail with one line), not on the first request
    app = create_app(settings, embedder)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is ours
    print(f"src.serve: {settings.policy} over {', '.join(b.name for b in settings.backends)}; "
          f"http://{settings.host}:{settings.port}/v1 (store {settings.store})", file=sys.stderr, flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    cli.run(main)
