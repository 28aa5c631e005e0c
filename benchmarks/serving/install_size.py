"""Disk taken by an installation: the torch build, and the whole environment it is in.

Run it with the environment's own interpreter (for `make`'s: ``.venv/bin/python``):

    .venv/bin/python benchmarks/serving/install_size.py --json benchmarks/serving/install_size.json
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path


def _size(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default=None, help="also write the figures to this file")
    a = p.parse_args()
    torch = metadata.distribution("torch")
    torch_files = [Path(torch.locate_file(f)) for f in torch.files or []]
    summary = {"python": sys.version.split()[0], "torch": torch.version,
               "torch_mb": _size(torch_files) / 2**20,
               "environment_mb": _size(Path(sys.prefix).rglob("*")) / 2**20,
               "packages": len(list(metadata.distributions()))}
    print(json.dumps(summary, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
