"""A stage's fingerprint covers tinylm's code for it: an updated library rebuilds exactly
the stages its change affects, and never serves a model that older code made."""
from __future__ import annotations

import ast
import shutil

import pytest

from tinylm import stages
from tinylm.config import load_preset
from tinylm.errors import TrainingError
from tinylm.stages import Run

TINY = load_preset("quick", bytes_per_language=20_000, vocab_size=300, n_layer=1, n_embd=16,
                   n_head=2, block_size=16, batch_size=8, epochs=1, warmup_steps=5, threads=1)
STAGES = ("corpus", "tokenizer", "tokens", "train")


@pytest.fixture
def source(tmp_path, monkeypatch):
    """A copy of tinylm's modules that the fingerprints read instead of the real ones."""
    copy = tmp_path / "source"
    shutil.copytree(stages.SOURCE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(stages, "SOURCE_DIR", copy)
    return copy


def edit(source, module: str) -> None:
    """A change of code: one more statement."""
    with open(source / f"{module}.py", "a") as f:
        f.write("\n_A_CHANGE = 1\n")


def reword(source, module: str) -> None:
    """Change what a reader sees but the interpreter does not: the module's and a function's
    docstring, a comment, a comment of its own on a new line, blank lines."""
    path = source / f"{module}.py"
    text = path.read_text()
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)
                    and ast.get_docstring(n) is not None)
    for doc in (function.body[0].value, tree.body[0].value):  # the later line first
        line = lines[doc.lineno - 1]
        at = line.index('"""', doc.col_offset) + 3
        lines[doc.lineno - 1] = line[:at] + "Reworded. " + line[at:]
    for i, line in enumerate(lines):
        if line.lstrip().startswith("# "):
            lines[i] = line.replace("# ", "# reworded: ", 1)
    lines.insert(tree.body[0].end_lineno, "\n# a comment of its own\n\n")
    path.write_text("".join(lines))
    assert path.read_text() != text


@pytest.mark.parametrize("module, rebuilt", [
    ("corpus", STAGES), ("tokenizer", STAGES[1:]), ("model", ("train",)), ("train", ("train",)),
    ("generate", ()),
])
def test_a_change_to_a_module_changes_the_stages_it_decides(source, tmp_path, module, rebuilt):
    run = Run(tmp_path / "run", TINY, progress=False)
    before = {stage: run.fingerprint(stage) for stage in STAGES}
    edit(source, module)
    changed = tuple(stage for stage in STAGES if run.fingerprint(stage) != before[stage])
    assert changed == rebuilt


@pytest.mark.parametrize("module", ["corpus", "tokenizer", "data", "model", "train"])
def test_comments_and_docstrings_change_no_fingerprint(source, tmp_path, module):
    """Fixing a comment in model.py retrains nothing: the fingerprint is of the code."""
    run = Run(tmp_path / "run", TINY, progress=False)
    before = {stage: run.fingerprint(stage) for stage in STAGES}
    reword(source, module)
    assert {stage: run.fingerprint(stage) for stage in STAGES} == before


def test_a_changed_value_in_the_code_changes_the_fingerprint(source, tmp_path):
    run = Run(tmp_path / "run", TINY, progress=False)
    before = run.fingerprint("train")
    path = source / "model.py"
    text = path.read_text()
    path.write_text(text.replace("std=0.02", "std=0.03", 1))
    assert path.read_text() != text and run.fingerprint("train") != before


def test_a_stage_made_by_other_code_is_rebuilt(source, tmp_path):
    run = Run(tmp_path / "run", TINY, progress=False)
    run.tokens()
    made = (run.corpus_dir / "train.txt").stat().st_mtime_ns
    assert run.is_current("corpus", run.corpus_dir)
    edit(source, "corpus")
    assert not run.is_current("corpus", run.corpus_dir)
    assert not run.is_current("tokens", run.tokens_dir)
    run.corpus()
    assert (run.corpus_dir / "train.txt").stat().st_mtime_ns != made
    assert run.is_current("corpus", run.corpus_dir)


def test_resuming_across_a_change_of_the_data_code_names_the_update(source, tmp_path):
    run = Run(tmp_path / "run", TINY, progress=False)
    run.train()
    edit(source, "tokenizer")
    with pytest.raises(TrainingError, match="tinylm's code for the tokenizer stage changed") as err:
        Run(tmp_path / "run", TINY, progress=False, resume=True).check_checkpoints()
    assert "--fresh" in err.value.remedy and "corpus files" not in err.value.remedy
