"""Gateway settings, defined once: each field of :class:`Settings` carries its flag's help, its
type and its check, and that one definition drives ``src.serve``'s flags, ``src.replay``'s flags
(the fields marked ``replay``, with the same defaults), the YAML file's keys and the validation
of both. A mistake costs one line naming the flag or the file and key, before a port is opened.

Backends come from ``--backend NAME=BASE_URL[,model=ID][,key_env=VAR][,max_concurrency=N]`` or
the YAML file's ``backends:`` list.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

from src.cli import UserError
from src.embedding_backends import BACKENDS as EMBEDDING_BACKENDS
from src.embeddings import PRECISIONS
from src.gateway.policy import FANOUT_RULES
from src.io import read_yaml
from src.paths import DEFAULT_EMBEDDER

POLICIES = ("fanout", "select", "local", "adaptive")
EXPLORE_ANSWERS = ("policy", "smoothie")
# The gateway's default precision follows the CPU (src.embeddings.auto_precision): bf16 only on a
# kind of CPU where bf16's routing decisions were measured equal to fp32's on 99.5% of the
# benchmark's requests (none yet: 99.05% on AVX-512 BF16), fp32 elsewhere; on AVX2-only CPUs bf16 is
# also emulated, 6x slower one text per pass (GSM8K answers: MiniLM 31 against 186 ms a text).
SERVE_PRECISION = "auto"
# A llama.cpp server answers one request at a time unless started with more slots; vLLM batches
# dozens. Four in flight per backend keeps either busy without letting the gateway's timeout
# count a long queue inside the backend.
DEFAULT_MAX_CONCURRENCY = 4
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Backend:
    """One OpenAI-compatible server. ``model`` is the id sent to it (default: its name); the API
    key, if any, is read from the environment variable ``key_env`` and never stored elsewhere;
    at most ``max_concurrency`` of the gateway's calls are in flight to it (the rest queue in
    the gateway, where the wait is measured and bounded)."""

    name: str
    base_url: str
    model: str | None = None
    key_env: str | None = None
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    @property
    def model_id(self) -> str:
        return self.model or self.name

    def api_key(self) -> str | None:
        return os.environ.get(self.key_env) if self.key_env else None


_BACKEND_OPTIONS = ("model", "key_env", "max_concurrency")
JUDGE_NAME = "judge"  # --judge URL is called as a backend of this name
BACKEND_SYNTAX = "NAME=BASE_URL[,model=ID][,key_env=VAR][,max_concurrency=N]"


def parse_backend(text: str, where: str = "--backend") -> Backend:
    """``NAME=BASE_URL[,model=ID][,key_env=VAR][,max_concurrency=N]`` -> Backend."""
    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise UserError(f"{where} {text!r}: expected {BACKEND_SYNTAX}")
    url, *options = rest.split(",")
    extra: dict = {}
    for option in options:
        key, sep, value = option.partition("=")
        if key not in _BACKEND_OPTIONS or not sep or not value:
            raise UserError(f"{where} {text!r}: unknown option {option!r} (allowed: model=ID, key_env=VAR, "
                            "max_concurrency=N)")
        extra[key] = value
    return check_backend(name.strip(), url.strip(), extra, where)


def check_backend(name: str, url: str, extra: dict, where: str) -> Backend:
    if not _NAME.match(name):
        raise UserError(f"{where}: backend name {name!r} must be letters, digits, '.', '_' or '-'")
    if not re.match(r"^https?://[^/\s]+(/\S*)?/v1$", url.rstrip("/")):
        raise UserError(f"{where} {name}: base URL {url!r} must be http(s)://HOST[:PORT]/.../v1")
    key_env = extra.get("key_env")
    if key_env and key_env not in os.environ:
        raise UserError(f"{where} {name}: key_env={key_env} names an environment variable that is not set")
    limit = extra.get("max_concurrency", DEFAULT_MAX_CONCURRENCY)
    if isinstance(limit, bool) or not str(limit).isdigit() or int(limit) < 1:
        raise UserError(f"{where} {name}: max_concurrency={limit} must be a whole number of at least 1")
    return Backend(name, url.rstrip("/"), extra.get("model"), key_env, int(limit))


# -- one definition per setting ----------------------------------------------------------------------
def _between(low: float, high: float) -> Callable[[float], str | None]:
    return lambda v: None if low <= v <= high else f"must be between {low:g} and {high:g}"


def _at_least(low: float) -> Callable[[float], str | None]:
    return lambda v: None if v >= low else f"must be at least {low:g}"


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be positive"


def _port(v: int) -> str | None:
    return None if 0 < v < 65536 else "is not a TCP port"


def _http_url(v: str) -> str | None:
    return None if v.startswith(("http://", "https://")) else "must be an http:// or https:// URL"


def setting(default, help: str, *, type=str, check=None, choices=None, replay: bool = False,
            nullable: bool = False, multiple: bool = False):
    """A Settings field: its default, the help of its flag, its type (int, float, str or bool),
    an optional check returning what is wrong, and whether ``src.replay`` takes it too."""
    meta = {"help": help, "type": type, "check": check, "choices": choices, "replay": replay,
            "nullable": nullable, "multiple": multiple}
    if multiple:
        return field(default_factory=list, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Settings:
    """What ``src.serve`` (and, for the fields marked ``replay``, ``src.replay``) runs with. The
    YAML file's keys are these field names; a flag is ``--`` and the name."""

    backends: list[Backend] = field(default_factory=list)
    policy: str = setting("fanout", "fanout: ask every backend, return Smoothie's pick; select: one call to the best "
                          "Smoothie-Global backend; local: one call to the best Smoothie-Local backend for this input; "
                          "adaptive: fan out where the routing is unsure, about --budget calls per request",
                          choices=POLICIES, replay=True)
    fanout_rule: str = setting("auto", "the estimator a fan-out's answer is chosen by: Smoothie-Global over the "
                               "--window, Smoothie-Local over --k neighbours, or auto: whichever the stored "
                               "fan-outs favour, judged without labels (said in smoothie.estimator)",
                               choices=FANOUT_RULES, replay=True)
    budget: float = setting(1.5, "adaptive: backend calls per request on average after the warm-up (1 = never "
                            "fan out; the number of backends = always)", type=float,
                            check=_at_least(1), replay=True)
    contenders: float = setting(0.9, "select and adaptive's single calls go only to the backends that cannot be "
                                "told apart from Global's best: the fewest that are best in this share of bootstrap "
                                "resamples of the stored fan-outs (0: the single best, always)", type=float,
                                check=_between(0, 1), replay=True)
    contender_spread: str = setting("capacity", "how a single call chooses among several contenders: capacity: the "
                                    "best unless it has no free slot (in flight plus queued against max_concurrency), "
                                    "then one with a free slot (or the least loaded), drawn by share; shares: among "
                                    "those with a free slot, always drawn in proportion to their shares (hedges: a "
                                    "smaller spread between seeds, at some cost where the best is usually right)",
                                    choices=("capacity", "shares"), replay=True)
    judge: str | None = setting(None, "a judge of pairwise answers where agreement cannot decide: a backend's NAME, "
                                "peers (each backend judges the other contenders' answers, never its own), or "
                                "URL[,model=ID][,key_env=VAR][,max_concurrency=N] (any OpenAI-compatible endpoint); "
                                "it judges the contenders' answers of fan-outs with two or more contenders, after "
                                "the response (default: no judge)", nullable=True, replay=True)
    judge_budget: float = setting(1.0, "the most requests that get judge calls, as a share of the requests so far "
                                  "(counted over the verdicts each request sees, so a replay counts the same)",
                                  type=float, check=_between(0, 1), replay=True)
    judge_among: int = setting(3, "with a judge, the backends it compares: the contenders and at least this many "
                               "best by Smoothie-Global (agreement can be confidently wrong: a weak consensus)",
                               type=int, check=_at_least(2), replay=True)
    judge_duels: float = setting(1.0, "with a judge, the share of single-call requests that are duels until its "
                                 "verdicts decide: after the response the backend the verdicts rate likeliest to beat "
                                 "the one called answers too, and the judge compares the two (a draw keyed by seed "
                                 "and request number; two calls each). Duels stop once the verdicts decide, or hold "
                                 "400 verdicts (a tie)", type=float, check=_between(0, 1), replay=True)
    judge_timeout: float = setting(30.0, "seconds a judge call may take from dispatch (its wait for a slot is "
                                   "--max_queue_wait's); a judge that fails or hangs costs its verdict, never a "
                                   "response", type=float, check=_positive)
    explore: float = setting(0.1, "share of select/local requests that also fan out, to keep learning", type=float,
                             check=_between(0, 1), replay=True)
    explore_answer: str = setting("policy", "on an explore request, answer with the backend the policy chose, "
                                  "straight away, and fan out to the others after the response (policy); or wait "
                                  "for every backend and return Smoothie's pick among them (smoothie)",
                                  choices=EXPLORE_ANSWERS, replay=True)
    k: int = setting(20, "neighbours for Smoothie-Local", type=int, check=_at_least(1), replay=True)
    warmup: int | None = setting(None, "select/local fan out until this many usable fan-outs (3 or more answers) "
                                 "are stored (default: k)", type=int, check=_at_least(0), replay=True, nullable=True)
    window: int = setting(1000, "select's Global weights use the last N stored fan-outs", type=int,
                          check=_at_least(1), replay=True)
    lag: int = setting(16, "request number s is routed by the stored fan-outs of requests numbered below s - lag (it "
                       "never waits for one still running: its log line names those, unseen, so src.replay "
                       "--server_log reproduces it)", type=int, check=_at_least(0), replay=True)
    explore_lag: int = setting(256, "an explore fan-out finished after its response (--explore_answer policy) is "
                               "seen by requests numbered above its own plus this many", type=int,
                               check=_at_least(0), replay=True)
    seed: int = setting(0, "seed of the explore draws", type=int, replay=True)
    embedding_model: str = setting(DEFAULT_EMBEDDER, "sentence-transformers short name, hub id or local folder",
                                   replay=True)
    embedding_backend: str = setting("torch", "embedder runtime", choices=EMBEDDING_BACKENDS, replay=True)
    embedding_precision: str = setting(SERVE_PRECISION, "auto: bf16 on a kind of CPU where its routing decisions "
                                       "were measured equal to fp32's (none yet; docs/serving.md), fp32 elsewhere; or "
                                       "fp32, or bf16 (autocast: faster where the CPU has AMX or AVX-512 BF16). "
                                       "Vectors of each precision are stored apart", choices=("auto", *PRECISIONS),
                                       replay=True)
    embedding_batch_size: int = setting(32, "texts of concurrent requests embedded in one forward pass, sorted by "
                                        "length (1: one text per pass, as before; vectors differ in the last bits, "
                                        "so each mode has its own cache)", type=int, check=_at_least(1), replay=True)
    embedding_batch_wait_ms: float = setting(2.0, "milliseconds the embedding thread waits for more texts to fill a "
                                             "batch (it always takes every text already queued)", type=float,
                                             check=_at_least(0))
    embedding_url: str | None = setting(None, "an OpenAI-compatible embedding server's base URL "
                                        "(http://host:port/v1: vLLM, Hugging Face TEI, Infinity); "
                                        "--embedding_model then names its model id", nullable=True,
                                        replay=True)
    embedding_timeout: float = setting(30.0, "seconds an embedding server call may take (two retries follow a "
                                       "timeout, a refused connection or a 5xx)", type=float, check=_positive,
                                       replay=True)
    embedding_key_env: str | None = setting(None, "environment variable holding the embedding server's API key",
                                            nullable=True, replay=True)
    clean: bool = setting(False, "embed only each answer's first line, as the batch commands do for short-answer "
                          "tasks (default: whole answers)", type=bool, replay=True)
    store: str | None = setting(None, "where fanned-out requests (prompts, answers, embeddings) are kept: a SQLite "
                                "file (one process; created 0600), :memory: (kept nowhere), or "
                                "postgresql://user@host:port/db, shared by several gateway replicas (default: "
                                "gateway.sqlite in the per-user data folder, $SMOOTHIE_DATA_DIR or "
                                "~/.local/share/smoothie; said at start)", nullable=True)
    store_text: str = setting("on", "off: the store keeps embeddings and SHA-256 digests of the prompts and "
                              "answers, never their text (routing is unchanged; explore fan-outs still running "
                              "at a restart are then lost, since their request is not written down)",
                              choices=("on", "off"))
    store_timeout: float = setting(5.0, "seconds a store call may take (PostgreSQL: statement and lock timeout; "
                                   "SQLite: wait for another writer); past it a routed request gets 503 "
                                   "store_unavailable", type=float, check=_positive)
    store_poll_interval: float = setting(0.5, "seconds between a replica's looks at what the other replicas stored "
                                         "(PostgreSQL store)", type=float, check=_positive)
    store_max_rows: int = setting(100_000, "fan-outs kept; the oldest tenth goes when full", type=int,
                                  check=_at_least(1), replay=True)
    host: str = setting("127.0.0.1", "address to bind")
    port: int = setting(8000, "port", type=int, check=_port)
    api_key_env: str | None = setting(None, "environment variable holding the key clients must send as "
                                      "'Authorization: Bearer ...' (default: no key)", nullable=True)
    protect_reports: bool = setting(False, "/health and /metrics also require the --api_key_env key (default: "
                                    "open, for probes and scrapers on a private network)", type=bool)
    timeout: float = setting(60.0, "seconds a backend call may take from dispatch to its last byte (time queued "
                             "in the gateway does not count)", type=float, check=_positive)
    max_queue_wait: float = setting(30.0, "seconds a call may wait for a free slot of its backend "
                                    "(max_concurrency); past it the request gets 503 with Retry-After",
                                    type=float, check=_positive)
    max_failures: int = setting(3, "backend failures in a row before it cools down", type=int, check=_at_least(1))
    cooldown: float = setting(30.0, "seconds a failing backend is skipped", type=float, check=_at_least(0))
    max_body_bytes: int = setting(1 << 20, "largest request body", type=int, check=_at_least(1))
    otel_endpoint: str | None = setting(None, "export OpenTelemetry traces over OTLP/HTTP to this collector (a base URL "
                                        "such as http://127.0.0.1:4318 gets /v1/traces; default: no traces)",
                                        nullable=True, check=_http_url)
    router_name: str = setting("smoothie", "the routed model's id in /v1/models")
    alias: list[str] = setting(None, "another model name that is routed (repeatable); any other name that is "
                               "not a backend gets 404 model_not_found", multiple=True)

    @property
    def precision(self) -> str:
        """``--embedding_precision`` with ``auto`` resolved for this CPU."""
        from src.embeddings import auto_precision

        return auto_precision() if self.embedding_precision == "auto" else self.embedding_precision

    @property
    def store_location(self) -> str:
        """``--store``, or the per-user default file."""
        from src.paths import gateway_store

        return self.store or str(gateway_store())

    @property
    def warmup_rows(self) -> int:
        return self.k if self.warmup is None else self.warmup

    def backend(self, name: str) -> Backend | None:
        return next((b for b in self.backends if b.name == name), None)

    @property
    def judge_kind(self) -> str | None:
        """None, "peers", "backend" (one of --backend) or "url" (an endpoint of its own)."""
        if not self.judge:
            return None
        if self.judge == "peers":
            return "peers"
        return "url" if self.judge.split(",")[0].startswith(("http://", "https://")) else "backend"

    def judge_backend(self) -> Backend | None:
        """--judge URL as a backend named ``judge``: never routed to, called only to judge."""
        if self.judge_kind != "url":
            return None
        return parse_backend(f"{JUDGE_NAME}={self.judge}", "--judge")

    def routed_names(self) -> list[str]:
        return [self.router_name, *self.alias]

    def check(self, where: dict[str, str] | None = None) -> Settings:
        """Validate everything a user sets; raises UserError naming the flag (or file and key)."""
        where = where or {}
        for f in setting_fields():
            value, meta = getattr(self, f.name), f.metadata
            place = where.get(f.name, f"--{f.name}")
            for item in (value if meta["multiple"] else [value]):
                if item is None and (meta["nullable"] or meta["multiple"]):
                    continue
                problem = _type_problem(item, meta)
                if problem is None and meta["choices"] and item not in meta["choices"]:
                    problem = f"choose one of {', '.join(meta['choices'])}"
                if problem is None and meta["check"]:
                    problem = meta["check"](item)
                if problem:
                    raise UserError(f"{place} {item!r}: {problem}")
        if self.policy == "adaptive" and self.budget > len(self.backends):
            raise UserError(f"{where.get('budget', '--budget')} {self.budget:g}: more calls per request than there "
                            f"are backends ({len(self.backends)})")
        if len(self.backends) < 3:
            raise UserError(f"--backend: Smoothie needs at least 3 backends (the triplet identity), got "
                            f"{len(self.backends)}")
        names = [b.name for b in self.backends]
        if len(set(names)) != len(names):
            raise UserError(f"--backend: names must differ ({', '.join(names)})")
        for routed in self.routed_names():
            if routed in names:
                raise UserError(f"--router_name/--alias {routed!r} is also a backend's name")
        if self.judge_kind == "backend" and not self.backend(self.judge):
            raise UserError(f"{where.get('judge', '--judge')} {self.judge!r}: not a backend's name, 'peers' or an "
                            f"http(s):// URL (backends: {', '.join(names)})")
        if self.judge_kind == "url":
            self.judge_backend()
            if JUDGE_NAME in names:
                raise UserError(f"--judge: a backend is named {JUDGE_NAME!r}, the name a judge URL is called by")
        if self.protect_reports and not self.api_key_env:
            raise UserError(f"{where.get('protect_reports', '--protect_reports')}: needs --api_key_env (the key "
                            "that protects /health and /metrics)")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise UserError(f"--api_key_env {self.api_key_env}: that environment variable is not set or empty")
        return self


def setting_fields(replay_only: bool = False) -> list:
    """The fields defined with :func:`setting` (every setting but ``backends``)."""
    return [f for f in fields(Settings) if "help" in f.metadata and (f.metadata["replay"] or not replay_only)]


def _type_problem(value, meta) -> str | None:
    kind = meta["type"]
    if kind is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if kind is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be a whole number"
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else "must be a number"
    return None if isinstance(value, str) else "must be a string"


def _flag_type(kind):
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
    return convert


def add_flags(p: argparse.ArgumentParser, replay_only: bool = False) -> None:
    """One flag per setting, all defaulting to None (not given), so that a YAML file's value is
    kept unless a flag overrides it; the help states the real default."""
    for f in setting_fields(replay_only):
        meta = f.metadata
        default = [] if meta["multiple"] else f.default
        text = meta["help"] if "default" in meta["help"] or default in (None, []) else \
            f"{meta['help']} (default: {default})"
        if meta["type"] is bool:
            p.add_argument(f"--{f.name}", action="store_true", default=None, help=text)
        elif meta["multiple"]:
            p.add_argument(f"--{f.name}", action="append", default=None, metavar="NAME", help=text)
        else:
            p.add_argument(f"--{f.name}", default=None, choices=meta["choices"], help=text,
                           type=_flag_type(meta["type"]) if meta["type"] in (int, float) else None)


def from_args(args: argparse.Namespace, replay_only: bool = False) -> dict:
    """The settings a parsed command line gave (flags not given are left out)."""
    return {f.name: getattr(args, f.name) for f in setting_fields(replay_only) if getattr(args, f.name) is not None}


def load(config_path: str | None, overrides: dict, backends: Iterable[str] = ()) -> Settings:
    """Settings from ``config_path`` (YAML, optional) with ``overrides`` (flags given) on top;
    ``backends`` (``--backend`` texts) are added to the file's."""
    values: dict = {}
    where: dict[str, str] = {}
    if config_path:
        if not Path(config_path).is_file():
            raise UserError(f"--config {config_path}: file not found")
        raw = read_yaml(config_path) or {}
        if not isinstance(raw, dict):
            raise UserError(f"--config {config_path}: expected a mapping of settings")
        known = {f.name for f in fields(Settings)}
        unknown = sorted(str(k) for k in set(raw) - known)
        if unknown:
            raise UserError(f"--config {config_path}: unknown setting(s) {', '.join(unknown)}")
        file_backends = raw.pop("backends", None) or []
        if not isinstance(file_backends, list):
            raise UserError(f"--config {config_path}: backends must be a list")
        values.update(raw)
        where.update({k: f"--config {config_path}: {k}" for k in raw})
        values["backends"] = [_backend_from_yaml(b, config_path) for b in file_backends]
    values.update(overrides)
    where.update({k: f"--{k}" for k in overrides})
    values["backends"] = values.get("backends", []) + [parse_backend(b) for b in backends]
    if "alias" in values and values["alias"] is not None and not isinstance(values["alias"], list):
        values["alias"] = [values["alias"]]
    return Settings(**values).check(where)


def _backend_from_yaml(item, path: str) -> Backend:
    where = f"--config {path}"
    if isinstance(item, str):
        return parse_backend(item, where)
    if isinstance(item, dict) and {"name", "base_url"} <= set(item) <= {"name", "base_url", *_BACKEND_OPTIONS}:
        extra = {k: v if k == "max_concurrency" else str(v) for k, v in item.items()
                 if k not in ("name", "base_url")}
        return check_backend(str(item["name"]), str(item["base_url"]), extra, where)
    raise UserError(f"{where}: each backend is 'NAME=URL' or a mapping with name, base_url[, model, key_env, "
                    "max_concurrency]")
