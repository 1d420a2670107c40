"""fdrl: Flow-Guided Density Ratio Learning (Heng, Ansari, Soh), reproduced end to end.

One module per concept of the paper: `divergences` (Table 2, Eq. 22-24), `losses` (Bregman
losses, Eq. 18-21), `flow` (the Euler-Maruyama flow, Eq. 9 and Eq. 31), `priors` (Eq. 8, the
uniform and source-domain priors), `nets` (Table 3), `ema`, and `step` (Algorithm 1); the stages
of the pipeline above them, the `fdrl` command on top (docs/design.md#code-layout).
"""

__version__ = "0.1.0"
