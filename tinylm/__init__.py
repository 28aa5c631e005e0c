"""tinylm: train a tiny bilingual GPT from scratch on a laptop CPU, and learn how.

Import what you need from the modules (``tinylm.model``, ``tinylm.train`` ...); this
package module stays light so that ``import tinylm`` does not pull in torch.
"""
__version__ = "0.1.0"
