"""The package's structure: what loads what."""
import subprocess
import sys

HEAVY = ("torch", "numpy", "tokenizers", "matplotlib", "papermill")


def test_the_command_line_loads_no_heavy_library_before_it_has_work():
    """The reason the command line may import its harness at module level and must import
    the core's torch modules inside functions: bad input is refused in a fraction of torch's
    import time. ``import tinylm.cli`` loads stages, pipeline, budget and estimate, not torch."""
    code = ("import sys, tinylm.cli, tinylm.stages, tinylm.pipeline; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
