"""Every task's metric gives full marks to an answer in the format its templates teach,
and to each template's own worked example."""

from __future__ import annotations

import json
import re

import pytest
from conftest import ROOT

from src.evaluate.metrics import METRICS, TASK_METRIC
from src.evaluate.scoring import score_rows

TEMPLATES = ROOT / "prompt_templates"

# A reference-formatted answer per task: (generation as a model taught by our templates writes
# it, the reference as make_dataset stores it).
FORMATTED = {
    "cnn_dailymail": ("The council approved a new bridge over the river .", "The council approved a new bridge over the river ."),
    "xsum": ("Record rainfall hit the region this year.", "Record rainfall hit the region this year."),
    "e2e_nlg": ("The Mill is an Italian pub by the riverside.", "The Mill is an Italian pub by the riverside."),
    "web_nlg": ("Aarhus Airport serves the city of Aarhus.", ["Bad one.", "Aarhus Airport serves the city of Aarhus."]),
    "squad": ("Normandy", "Normandy"),
    "trivia_qa": ("The answer is Paris.", ["paris", "city of light"]),
    "definition_extraction": ("security", "security"),
    "gsm8k": ("She sells 16 - 3 - 4 = 9 eggs a day, earning 9 * 2 = 1,018 dollars. Therefore, the answer is 1,018.",
              "1018"),
    "mix_instruct": ("vicuna says hi", {"vicuna says hi": 1, "alpaca says hi": 2}),
    "demo": ("Rome", ["rome"]),
}

# The worked examples in our templates, in order of appearance, with the reference the task's
# dataset would give them. A template that gains an example must gain a line here.
WORKED = {
    "gsm8k_multi_model.txt": ["10"],
    "gsm8k_multi_prompt.json": ["15"],
    "e2e_nlg_multi_model.txt": ["The Mill is a pub by the riverside that serves Italian food."],
    "e2e_nlg_multi_prompt.json": ["Blue Spice serves cheap Chinese food.", "Loch Fyne is a highly rated restaurant.",
                                  "The Phoenix serves French food in the city centre."],
    "web_nlg_multi_model.txt": [["Aarhus Airport serves the city of Aarhus."]],
    "web_nlg_multi_prompt.json": [["Alan Bean is American."]],
    "definition_extraction_multi_prompt.json": ["security"],
    "demo_multi_prompt.json": [["rome"], ["rome"], ["mercury"]],
    "trivia_qa_multi_prompt.json": [["mars"], ["william shakespeare"], ["au"]],
}


def _examples(text: str) -> list[str]:
    """Worked answers: the text after the template's final answer label, wherever that label
    appears before the placeholder (``Answer: ...``, ``A: ...``, ``Term: ...``, ``Text: ...``)."""
    label = text.rstrip().rsplit("\n", 1)[-1].strip()
    if not label.endswith(":") or "{" in label:
        return []
    head = text[: text.index("{")] if "{" in text else text
    return [m.strip() for m in re.findall(rf"^{re.escape(label)}(.+)$", head, flags=re.M) if m.strip()]


def _templates():
    for path in sorted(TEMPLATES.iterdir()):
        texts = json.loads(path.read_text()) if path.suffix == ".json" else [path.read_text()]
        yield path.name, texts


def test_every_task_has_a_formatted_answer_case():
    assert set(FORMATTED) == set(TASK_METRIC)


@pytest.mark.parametrize("task", sorted(FORMATTED))
def test_reference_formatted_answer_scores_full_marks(task):
    generation, reference = FORMATTED[task]
    metric = TASK_METRIC[task]
    score = score_rows([generation], [{"task_name": task, "reference": reference}], [metric])[0]
    assert score == pytest.approx(1.0), (task, score)  # for mix_instruct_rank, 1 is the best rank
    assert metric in METRICS


@pytest.mark.parametrize("name,texts", list(_templates()), ids=[n for n, _ in _templates()])
def test_worked_examples_score_full_marks(name, texts):
    found = [ex for t in texts for ex in _examples(t)]
    assert len(found) == len(WORKED.get(name, [])), f"{name}: worked examples {found} need references in WORKED"
    task = name.rsplit("_multi_", 1)[0]
    for example, reference in zip(found, WORKED.get(name, [])):
        score = score_rows([example], [{"task_name": task, "reference": reference}], [TASK_METRIC[task]])[0]
        assert score == pytest.approx(1.0), (name, example, reference, score)


def test_gsm8k_capitalised_ending_scores_zero_so_templates_must_not_teach_it():
    """The paper's rule is case-sensitive: why every gsm8k template says 'Therefore, the answer is'."""
    assert score_rows(["3 + 7 = 10. The answer is 10."], [{"task_name": "gsm8k", "reference": "10"}],
                      ["gsm8k_acc"])[0] == 0.0
    for path in TEMPLATES.glob("gsm8k_*"):
        assert "The answer is" not in path.read_text(), path
