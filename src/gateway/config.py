"""Gateway settings: backends from ``--backend NAME=BASE_URL[,model=ID][,key_env=VAR]`` or a YAML
file, with flags overriding the file. Everything is checked here, before a port is opened, so a
mistake costs one line naming the flag or file, not a server that fails on its first request."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from src.cli import UserError
from src.io import read_yaml
from src.paths import DEFAULT_EMBEDDER

POLICIES = ("fanout", "select", "local")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Backend:
    """One OpenAI-compatible server. ``model`` is the id sent to it (default: its name); the API
    key, if any, is read from the environment variable ``key_env`` and never stored elsewhere."""

    name: str
    base_url: str
    model: str | None = None
    key_env: str | None = None

    @property
    def model_id(self) -> str:
        return self.model or self.name

    def api_key(self) -> str | None:
        return os.environ.get(self.key_env) if self.key_env else None


def parse_backend(text: str, where: str = "--backend") -> Backend:
    """``NAME=BASE_URL[,model=ID][,key_env=VAR]`` -> Backend."""
    name, sep, rest = text.partition("=")
    if not sep or not rest:
        raise UserError(f"{where} {text!r}: expected NAME=BASE_URL[,model=ID][,key_env=VAR]")
    url, *options = rest.split(",")
    extra = {}
    for option in options:
        key, sep, value = option.partition("=")
        if key not in ("model", "key_env") or not sep or not value:
            raise UserError(f"{where} {text!r}: unknown option {option!r} (allowed: model=ID, key_env=VAR)")
        extra[key] = value
    return check_backend(Backend(name.strip(), url.strip(), **extra), where)


def check_backend(b: Backend, where: str) -> Backend:
    if not _NAME.match(b.name):
        raise UserError(f"{where}: backend name {b.name!r} must be letters, digits, '.', '_' or '-'")
    if not re.match(r"^https?://[^/\s]+(/\S*)?/v1$", b.base_url.rstrip("/")):
        raise UserError(f"{where} {b.name}: base URL {b.base_url!r} must be http(s)://HOST[:PORT]/.../v1")
    if b.key_env and b.key_env not in os.environ:
        raise UserError(f"{where} {b.name}: key_env={b.key_env} names an environment variable that is not set")
    return Backend(b.name, b.base_url.rstrip("/"), b.model, b.key_env)


@dataclass
class Settings:
    """What ``src.serve`` runs with; the YAML file's keys are these field names."""

    backends: list[Backend] = field(default_factory=list)
    policy: str = "fanout"
    explore: float = 0.1
    k: int = 20
    warmup: int | None = None  # None: k fan-outs, so that local has k neighbours from the start
    window: int = 1000
    seed: int = 0
    embedding_model: str = DEFAULT_EMBEDDER
    clean: bool = False
    store: str = "smoothie_gateway.sqlite"
    store_max_rows: int = 100_000
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_env: str | None = None
    timeout: float = 60.0
    max_failures: int = 3
    cooldown: float = 30.0
    max_body_bytes: int = 1 << 20
    router_name: str = "smoothie"

    @property
    def warmup_rows(self) -> int:
        return self.k if self.warmup is None else self.warmup

    def backend(self, name: str) -> Backend | None:
        return next((b for b in self.backends if b.name == name), None)

    def check(self) -> Settings:
        """Validate everything a user sets; raises UserError naming the flag."""
        if len(self.backends) < 3:
            raise UserError(f"--backend: Smoothie needs at least 3 backends (the triplet identity), got "
                            f"{len(self.backends)}")
        names = [b.name for b in self.backends]
        if len(set(names)) != len(names):
            raise UserError(f"--backend: names must differ ({', '.join(names)})")
        if self.router_name in names:
            raise UserError(f"--router_name {self.router_name!r} is also a backend's name")
        if self.policy not in POLICIES:
            raise UserError(f"--policy {self.policy!r}: choose one of {', '.join(POLICIES)}")
        if not 0.0 <= self.explore <= 1.0:
            raise UserError(f"--explore {self.explore}: must be between 0 and 1")
        for name in ("k", "window", "store_max_rows", "max_failures", "max_body_bytes"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"--{name} must be at least 1")
        if self.warmup is not None and self.warmup < 0:
            raise UserError("--warmup must be 0 or more")
        if self.timeout <= 0 or self.cooldown < 0:
            raise UserError("--timeout must be positive and --cooldown not negative")
        if not 0 < self.port < 65536:
            raise UserError(f"--port {self.port}: not a TCP port")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise UserError(f"--api_key_env {self.api_key_env}: that environment variable is not set or empty")
        return self


def load(config_path: str | None, overrides: dict, backends: list[str] = ()) -> Settings:
    """Settings from ``config_path`` (YAML, optional) with ``overrides`` (flags given, None for
    not given) on top; ``backends`` (``--backend`` texts) are added to the file's."""
    values: dict = {}
    if config_path:
        if not Path(config_path).is_file():
            raise UserError(f"--config {config_path}: file not found")
        raw = read_yaml(config_path) or {}
        if not isinstance(raw, dict):
            raise UserError(f"--config {config_path}: expected a mapping of settings")
        known = {f.name for f in fields(Settings)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UserError(f"--config {config_path}: unknown setting(s) {', '.join(unknown)}")
        values.update(raw)
        values["backends"] = [_backend_from_yaml(b, config_path) for b in raw.get("backends") or []]
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["backends"] = values.get("backends", []) + [parse_backend(b) for b in backends]
    try:
        return Settings(**values).check()
    except TypeError as exc:
        raise UserError(f"--config {config_path}: {exc}") from None


def _backend_from_yaml(item, path: str) -> Backend:
    where = f"--config {path}"
    if isinstance(item, str):
        return parse_backend(item, where)
    if isinstance(item, dict) and {"name", "base_url"} <= set(item) <= {"name", "base_url", "model", "key_env"}:
        return check_backend(Backend(**{k: str(v) for k, v in item.items()}), where)
    raise UserError(f"{where}: each backend is 'NAME=URL' or a mapping with name, base_url[, model, key_env]")
