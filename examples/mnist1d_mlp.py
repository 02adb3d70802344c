"""The built-in example ``edgecompress.examples.mnist1d_mlp``, shipped inside the package (its file,
``edgecompress/examples/mnist1d_mlp.py``, is the one to copy for your own model). This path keeps
working in a clone: ``edgecompress search examples/mnist1d_mlp.py:experiment ...``.
"""

from edgecompress.examples.mnist1d_mlp import experiment

__all__ = ["experiment"]
