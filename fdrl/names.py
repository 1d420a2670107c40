"""The names the command line and the workflow offer, importable without torch.

`fdrl --help`, argument errors and Snakemake's planning (`workflow/rules/common.smk`) read these
lists and never wait for torch to import. Each registry that implements a name is keyed by it
(`divergences.DIVERGENCES`, `toy.EXPERIMENTS`, `figures.FIGURES`, `tables.TABLES`,
`features.load_extractor`); `tests/test_structure.py` checks that both sides agree.
"""

# The legal Bregman loss - f-divergence pairings (Appendix C).
PAIRINGS = ("lsif-pearson", "lr-kl", "lr-js", "lr-logd")
# How the tables title each f-divergence, by the name a pairing gives it after its loss (Table 2's
# names; `divergences.DIVERGENCES` implements them).
DIVERGENCE_TITLES = {"pearson": "Pearson chi^2", "kl": "KL", "js": "JS", "logd": "log D"}

# Where the flow starts (q'): the data-dependent Gaussian of Eq. 8, U[-1, 1], or the images of a
# source domain (image-to-image translation).
PRIORS = ("data", "uniform", "source")

# The arithmetic of the network's forward passes (fdrl.precision): float32, or bf16 autocast.
PRECISIONS = ("fp32", "bf16")
# What a training run may ask for: one of those, or `auto`, the faster of them as measured on the
# device when the run starts (fdrl.precision.fastest). A trained run records the one it used.
PRECISION_SETTINGS = (*PRECISIONS, "auto")

# The 2-D experiments: the Gaussians of Sec. 3.1 (Figs. 2, 3), the swiss roll per pairing (Fig. 10).
GAUSSIAN_TOYS = ("stale_near", "stale_far", "fdrl_far")
SWISSROLL_TOYS = tuple(f"swissroll_{pairing}" for pairing in PAIRINGS)
TOYS = GAUSSIAN_TOYS + SWISSROLL_TOYS

# Tables `fdrl table` writes; the code tables need no input file.
TABLES = ("table1", "table2", "table3", "table4", "toy", "class_conditional")
CODE_TABLES = ("table2", "table3")

FIGURES = ("fig2", "fig3", "fig4", "fig5", "fig6", "fig6_tradeoff", "fig7", "fig8", "fig9",
           "fig10", "fig11", "fig12")

# Feature spaces of `fdrl fid`: the authors' protocol (torchvision's ImageNet Inception through
# pytorch-fid), the two TF-FID Inceptions of pytorch-fid and clean-fid, and the demo's classifier.
FID_BACKENDS = ("torchvision-inception", "pytorch-fid", "clean-fid", "classifier")
