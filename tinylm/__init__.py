"""tinylm: train a tiny bilingual GPT from scratch on a laptop CPU, and learn how.

Import what you need from the modules (``tinylm.model``, ``tinylm.train`` ...); this
package module stays light so that ``import tinylm`` does not pull in torch.
"""
import os

__version__ = "0.1.0"

# OpenMP threads that finish early spin while they wait for the others. On a laptop that is
# also doing something else, a spinning thread steals the core its partner needs, and we
# measured training and inference 70-100x slower with 2 threads and one busy process.
# Passive waiting (sleep instead of spin) must be chosen before torch loads OpenMP; a value
# you set yourself is kept. Figures: benchmarks/README.md.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
