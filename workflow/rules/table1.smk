# Table 1 and its figures (Figs. 4, 5, 8, 9, 12-13), from the FID results, sample chunks and
# trained runs. Every table and figure of the workflow is marked for Snakemake's own report
# (`snakemake --report report.html`), with a caption in workflow/report/ saying what it reproduces.


rule table1:
    input:
        table1_inputs(),
    output:
        report(f"{ROOT}/table1.csv", caption=caption("table1"), category="Table 1"),
    log:
        f"{ROOT}/logs/tables/table1.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "fdrl table table1 --out {output} {input} > {log} 2>&1"


rule fig4:
    input:
        lambda wildcards: sample_chunks(wildcards.run)[:1],
    output:
        report(f"{ROOT}/figures/fig4_samples_{{run}}.png", caption=caption("fig4"),
               category="Table 1", subcategory="Fig. 4: samples"),
    log:
        f"{ROOT}/logs/figures/fig4_{{run}}.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "fdrl figure fig4 --out {output} {input} > {log} 2>&1"


rule fig5:
    input:
        [run_fid(config["flow_length"]["run"], backend, steps=n)
         for backend in BACKENDS for n in config["flow_length"]["steps"]],
    output:
        report(f"{ROOT}/figures/fig5_flow_length.png", caption=caption("fig5"), category="Table 1"),
    log:
        f"{ROOT}/logs/figures/fig5.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "fdrl figure fig5 --out {output} {input} > {log} 2>&1"


# Figs. 8 and 9 flow a few prior samples of a trained run themselves.
FLOWED_FIGURE_SHELL = (
    "OMP_NUM_THREADS={threads} fdrl figure {params.figure} --out {output} {params.run_dir} > {log} 2>&1"
)


rule fig8:
    input:
        figure_run("flow_process"),
    output:
        report(f"{ROOT}/figures/fig8_flow_process.png", caption=caption("fig8"), category="Table 1"),
    log:
        f"{ROOT}/logs/figures/fig8.log",
    params:
        figure="fig8",
        run_dir=lambda wildcards, input: os.path.dirname(input[0]),
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("evaluation")
    resources:
        **job_resources("evaluation"),
    shell:
        FLOWED_FIGURE_SHELL


rule fig9:
    input:
        figure_run("interpolation"),
    output:
        report(f"{ROOT}/figures/fig9_interpolation.png", caption=caption("fig9"), category="Table 1"),
    log:
        f"{ROOT}/logs/figures/fig9.log",
    params:
        figure="fig9",
        run_dir=lambda wildcards, input: os.path.dirname(input[0]),
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("evaluation")
    resources:
        **job_resources("evaluation"),
    shell:
        FLOWED_FIGURE_SHELL


rule fig12:
    input:
        unpack(nearest_inputs),
    output:
        report(f"{ROOT}/figures/fig12_nearest_{{dataset}}.png", caption=caption("fig12"),
               category="Table 1"),
    log:
        f"{ROOT}/logs/figures/fig12_{{dataset}}.log",
    params:
        backend=BACKENDS[0],
        weights=nearest_weights,
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("evaluation")
    resources:
        **job_resources("evaluation"),
    shell:
        "OMP_NUM_THREADS={threads} fdrl figure fig12 --backend {params.backend} {params.weights}"
        " --out {output} {input.chunk} {input.shards} > {log} 2>&1"
