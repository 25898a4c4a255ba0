"""Real servers for the gateway tests: llama-cpp-python's OpenAI-compatible server, one process
per model, and the gateway itself (``python -m src.serve``), all on 127.0.0.1 and stopped at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BACKEND_KEY = "test-backend-secret-7f3a9c"  # the gemma backend's API key; must never leak


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0, headers=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout} s:\n{log.read_text()[-3000:]}")


class Process:
    """A server subprocess with its log file; ``stop`` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: list[str], log: Path, ready_url: str, env: dict | None = None, headers=None):
        self.argv, self.log, self.ready_url, self.env, self.headers = argv, log, ready_url, env, headers
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        handle = self.log.open("a")
        self.proc = subprocess.Popen(self.argv, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, **(self.env or {})})
        handle.close()
        wait_ready(self.ready_url, self.proc, self.log, headers=self.headers)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


class LlamaServer(Process):
    """``python -m llama_cpp.server`` for one GGUF model; ``requests()`` counts the completion
    requests it received, from its own access log."""

    def __init__(self, name: str, model: Path, log_dir: Path, *extra: str, port: int | None = None):
        self.name, self.port = name, port or free_port()
        argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                "--port", str(self.port), "--n_ctx", "512", "--verbose", "False", *extra]
        headers = {"Authorization": f"Bearer {BACKEND_KEY}"} if "--api_key" in extra else None
        super().__init__(argv, log_dir / f"{name}.log", f"http://127.0.0.1:{self.port}/v1/models", headers=headers)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def requests(self) -> int:
        text = self.log.read_text() if self.log.exists() else ""
        return sum(line.count("POST /v1/") for line in text.splitlines())


class Gateway(Process):
    def __init__(self, log_dir: Path, name: str, backends: list[str], *flags: str, env: dict | None = None,
                 port: int | None = None):
        self.port = port or free_port()
        argv = [sys.executable, "-m", "src.serve", *(a for b in backends for a in ("--backend", b)),
                "--port", str(self.port), "--embedding_model", "all-minilm-l6-v2",
                # fp32 on every CPU: --embedding_precision auto picks bf16 where there is AMX, whose vectors move
                # with a batch's make-up in the last bf16 bit; the tests that compare server and replay need exact ones
                "--embedding_precision", "fp32", *flags]
        super().__init__(argv, log_dir / f"gateway-{name}.log", f"http://127.0.0.1:{self.port}/health", env=env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
