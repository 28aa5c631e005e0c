"""tinylm: train a tiny bilingual GPT from scratch on a laptop CPU, and learn how.

Import what you need from the modules (``tinylm.model``, ``tinylm.train`` ...); this
package module stays light: importing it loads no torch and changes nothing in the process
(the settings a training process wants are made explicitly: ``tinylm.runtime``).
"""
__version__ = "0.1.0"
