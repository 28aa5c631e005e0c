"""The book's diagrams say what the code does: a drawing is prose too."""
import importlib.util

from tinylm.pipeline import BOOK_DIR, CHAPTERS, CONCURRENT, MAX_WORKERS


def _diagrams():
    spec = importlib.util.spec_from_file_location("diagrams", BOOK_DIR / "diagrams.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_workflow_names_every_chapter_and_those_the_pipeline_runs_side_by_side():
    fig = _diagrams().workflow()
    text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts).replace("\n", " ")
    side = ", ".join(name[:2].lstrip("0") for name in CHAPTERS if name in CONCURRENT)
    assert f"runs the {len(CHAPTERS)} chapters" in text
    assert f"chapters {side} run side by side" in text and f"at most {MAX_WORKERS}" in text
