"""The stages one job goes through, in order: preparation, generation, synthesis.

The engine (:mod:`runners.engine`) calls them in order; they never call back up into it.
"""
