"""Serve an OpenAI-compatible gateway that routes each request among live models with Smoothie.

    python -m src.serve --backend a=http://127.0.0.1:8081/v1 --backend b=... --backend c=... \\
                        [--config gateway.yaml] [--policy fanout|select|local] [--port 8000]

A request whose ``model`` names a backend goes to it alone; ``smoothie`` (``--router_name``, and
any ``--alias``) is routed, and the response says which backend answered (``model``) and why (the
``smoothie`` object); any other name is 404 ``model_not_found``. See docs/serving.md and ``src.gateway``.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Sequence

from src import cli
from src.gateway import config


def build_parser():
    p = cli.parser("src.serve", "OpenAI-compatible gateway that routes among live models with Smoothie (no labels).")
    p.add_argument("--backend", action="append", default=None, metavar=config.BACKEND_SYNTAX,
                   help="an OpenAI-compatible backend (3 or more; BASE_URL ends in /v1); adds to --config's. "
                        f"max_concurrency: calls in flight to it, the rest queue in the gateway (default: "
                        f"{config.DEFAULT_MAX_CONCURRENCY}; 1 for a llama.cpp server with one slot)")
    p.add_argument("--config", default=None, help="YAML file with the same settings (flags override it)")
    config.add_flags(p)
    return p


def settings_from_args(args) -> config.Settings:
    return config.load(args.config, config.from_args(args), args.backend or [])


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, taken before the embedder loads: a port in use is one line, at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every response waited ~40 ms for the client's delayed ACK (measured: 48 ms
    # against 5 ms per request with httpx, the openai SDK's client)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise cli.UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    sock = bind(settings.host, settings.port)
    import uvicorn

    from src.embeddings import cpu_name
    from src.gateway.app import create_app
    from src.gateway.embedding import build_embedder
    from src.gateway.pgstore import check_postgres, is_postgres
    from src.gateway.redact import Redactor, without_credentials

    if is_postgres(settings.store_location):  # unreachable or misnamed: one line now, not at the first request
        check_postgres(settings.store_location)
    embedder = build_embedder(settings, persist=False)
    embedder.dimension()  # load the model (or probe the server) now, or fail with one line, not on the first request
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is ours

    redact = Redactor.for_settings(settings)

    def say(text: str) -> None:
        print(redact(text), file=sys.stderr, flush=True)

    def started(unreachable: dict[str, str]) -> None:
        for name, why in unreachable.items():
            say(f"src.serve: warning: backend {name} is unreachable at start ({why}); requests skip it while it fails")
        answering = [b.name for b in settings.backends if b.name not in unreachable]
        say(f"src.serve: backends answering GET /v1/models: {', '.join(answering) or 'none'}")
        if not settings.embedding_url:
            say(f"src.serve: embedding {settings.embedding_model} in {settings.precision} on {cpu_name()}"
                + (" (auto)" if settings.embedding_precision == "auto" else ""))
        text = "prompts and answers kept" if settings.store_text == "on" else "digests only, no text (--store_text off)"
        say(f"src.serve: {settings.policy} over {', '.join(b.name for b in settings.backends)}; "
            f"http://{settings.host}:{settings.port}/v1 (store {without_credentials(settings.store_location)}: {text}; "
            f"at most {settings.store_max_rows} fan-outs, --store_max_rows)")

    # the embedding thread holds the GIL between torch's kernels; the event loop must not wait the default
    # 5 ms for it on every switch, or each response waits behind the background fan-outs' embedding
    sys.setswitchinterval(0.0005)
    app = create_app(settings, embedder, on_start=started)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


if __name__ == "__main__":
    cli.run(main)
