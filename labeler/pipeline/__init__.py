"""The nightly auto-labeling pipeline: typed config, pure steps, and the Dask graph that wires them."""
