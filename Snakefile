# FDRL reproduction pipeline (docs/design.md): every table and figure of the paper is a target.
#
#   snakemake --profile cluster_profiles/local --configfile workflow/config/demo.yaml   # laptop, CPU
#   snakemake results/table1.csv --profile cluster_profiles/slurm                      # cluster
#   snakemake --report report.html [--configfile ...]      # every table and figure, with captions
#
# The stages live in workflow/rules/, one file each, included in pipeline order; their shared
# names, paths, resources and input functions in workflow/rules/common.smk.

from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


# paper.yaml is the default. A --configfile given on the command line replaces it rather than being
# merged into it: Snakemake merges nested mappings key by key, so a demo run would otherwise inherit
# every paper-scale entry the demo file does not mention. --config KEY=VALUE still applies on top.
# The path is taken from the Snakefile's folder, so `-s .../Snakefile -d SOMEWHERE` finds it too.
if not workflow.overwrite_configfiles:

    configfile: Path(workflow.basedir) / "workflow/config/paper.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/common_applications.smk"


# Checked once, when the workflow loads (jobs skip it: they need not import torch).
if workflow.is_main_process:
    check_site_settings()
    check_runs()


include: "workflow/rules/tables.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/table1.smk"
include: "workflow/rules/translation.smk"
include: "workflow/rules/class_conditional.smk"


# Tables and figures drawn from stored results (metrics JSON, sample chunks) take under a second
# and import no torch: Snakemake makes them itself, where it runs (on a cluster, the login node),
# rather than each waiting in the queue for a job of its own. Figures that run a network (8, 9,
# 12, and 7 and 11, which load a run or a prior) and Tables 2-3 (computed with torch) stay jobs.
localrules:
    table1,
    table4,
    toy_table,
    class_conditional_table,
    fig2,
    fig3,
    fig4,
    fig5,
    fig6,
    fig6_tradeoff,
    fig10,


rule all:
    input:
        all_targets(),
    default_target: True
