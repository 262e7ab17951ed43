"""Results: HDF5 layout (schema), writers, reader, analysis, plots and the report (docs/design.md §8).

Import the submodules directly; nothing is imported here so that writing a
run never pulls in matplotlib.
"""
