"""The built-in examples, shipped with the package so that they run from an installed wheel:

    edgecompress search edgecompress.examples.mnist1d:experiment --speedup 10 --trials 24
    edgecompress search edgecompress.examples.mnist1d_mlp:experiment --speedup 5 --trials 24

``mnist1d``: a wide 1-D CNN on MNIST-1D; ``mnist1d_mlp``: an MLP of four 1024-unit layers on
the same data. Each teacher is trained on first use and cached in ``~/.cache/edgecompress``.
Copy one of these files for your own model.
"""
