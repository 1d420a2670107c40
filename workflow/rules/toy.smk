# The paper's 2-D experiments: Fig. 2 (stale estimator, Sec. 3.1), Fig. 3 (FDRL on the far
# Gaussians, Algorithm 1) and Fig. 10 (swiss roll, every legal pairing), plus toy.csv of their
# metrics. Each experiment is one single-threaded job, so that they run side by side on a laptop.
# The figure and table rules run where Snakemake runs (the Snakefile's `localrules`).


rule toy:
    output:
        samples=f"{ROOT}/toy/{{experiment}}/samples.npz",
        metrics=f"{ROOT}/toy/{{experiment}}/metrics.json",
    log:
        f"{ROOT}/logs/toy/{{experiment}}.log",
    params:
        outdir=lambda wildcards, output: os.path.dirname(output.samples),
        overrides=toy_overrides,
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("toy")
    resources:
        **job_resources("toy"),
    shell:
        "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}"
        " fdrl toy {wildcards.experiment} --out {params.outdir} {params.overrides} > {log} 2>&1"


rule fig2:
    input:
        near=toy_samples("stale_near"),
        far=toy_samples("stale_far"),
    output:
        report(f"{ROOT}/figures/fig2_stale_estimator.png", caption=caption("fig2"), category="2-D experiments"),
    log:
        f"{ROOT}/logs/figures/fig2.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "fdrl figure fig2 --out {output} {input.near} {input.far} > {log} 2>&1"


rule fig3:
    input:
        toy_samples("fdrl_far"),
    output:
        report(f"{ROOT}/figures/fig3_fdrl_progression.png", caption=caption("fig3"), category="2-D experiments"),
    log:
        f"{ROOT}/logs/figures/fig3.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "fdrl figure fig3 --out {output} {input} > {log} 2>&1"


rule fig10:
    input:
        # Panel order of the paper's Fig. 10: LSIF-chi2, LR-KL, LR-JS, LR-logD.
        toy_samples(*SWISSROLL_TOYS),
    output:
        report(f"{ROOT}/figures/fig10_swissroll.png", caption=caption("fig10"), category="2-D experiments"),
    log:
        f"{ROOT}/logs/figures/fig10.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "fdrl figure fig10 --out {output} {input} > {log} 2>&1"


rule toy_table:
    input:
        toy_metrics(*TOYS),
    output:
        report(f"{ROOT}/toy.csv", caption=caption("toy"), category="2-D experiments"),
    log:
        f"{ROOT}/logs/tables/toy.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "fdrl table toy --out {output} {input} > {log} 2>&1"
