r"""Curate, the application: the workspace facade with the two interfaces over it.

Layers (an arrow: may import):

    curate.cli  curate.ui      the interfaces: gather input, call the facade, render
           \      /
       curate.workspace        the facade: one method per step of the curation loop
           /      \
     training --> curation     LoRA runs and evaluation --> the data core
                     |
              curation.store   the only place that runs SQL

`curation` imports neither `training`, click nor streamlit; `tests/test_layers.py` holds
every package to its place.
"""

from curate.workspace import Attention, RankedGaps, SnapshotRuns, Workspace

__all__ = ["Attention", "RankedGaps", "SnapshotRuns", "Workspace"]
