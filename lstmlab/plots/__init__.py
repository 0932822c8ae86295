"""Figures (matplotlib, Agg backend: no display needed).

``curves``: a run's learning curve and curves of many runs against samples, P_D or time.
``lyu2015``: the figures of seed 000 (Lyu & Zhu) that ``lstmlab reproduce lyu2015`` draws.
"""
