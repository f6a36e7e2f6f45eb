"""aioli-repro: a reproduction of *Aioli: A Unified Optimization Framework for Language Model Data Mixing*.

Entry points: :func:`aioli_repro.train.train` (one run), :mod:`aioli_repro.policies` (the mixing methods),
:mod:`aioli_repro.laws` (mixing-law fits and the fidelity metric), :mod:`aioli_repro.profiles` (recipes).
"""

__version__ = "0.1.0"
