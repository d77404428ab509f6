"""DARTS: differentiable architecture search with a weight-sharing supernet.

The package, one module per concern (none imports a module that imports it back):

- :mod:`.config`: :class:`DartsConfig` and the command-line options;
- :mod:`.search`: the search loop, ``run`` (``pynas search darts``) and ``search`` (the
  Python API);
- :mod:`.supernet`: the DARTS-space supernet and what both supernets share;
- :mod:`.nb201`: the NAS-Bench-201 supernet;
- :mod:`.bilevel`: the first- and second-order bilevel optimiser;
- :mod:`.partial`: PC-DARTS's partial-channel edge and edge normalization;
- :mod:`.cures`: beta-DARTS's beta-decay, DARTS-'s auxiliary skip schedule, DrNAS's
  Dirichlet weights;
- :mod:`.cost`: ``--cost-target``, the per-operation cost table, its penalty and the
  cell within the tolerance;
- :mod:`.selection`: the cell chosen from the trained supernet by perturbation;
- :mod:`.plots`: architecture weights and curves of a search.
"""

from pynas.search.darts.config import DartsConfig, add_arguments
from pynas.search.darts.search import check_arguments, run

__all__ = ["DartsConfig", "add_arguments", "check_arguments", "run"]
