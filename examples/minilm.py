"""The built-in example ``edgecompress.examples.minilm`` (the pretrained all-MiniLM-L6-v2
sentence encoder), shipped inside the package (its file, ``edgecompress/examples/minilm.py``, is
the one to copy for your own Hugging Face model). This path keeps working in a clone:
``edgecompress search examples/minilm.py:experiment ...`` (after ``pip install
'edgecompress[transformers]'``; ``make setup`` installs it).
"""

from edgecompress.examples.minilm import experiment

__all__ = ["experiment"]
