# The data layer: a dataset -> WebDataset shards -> the data-dependent prior (Eq. 8) -> Fig. 11.
# A paper-scale dataset that is not staged fails in its `shard` job (naming the folder it expected
# and how to stage it), only when a requested target needs it; planning never reads the data.


rule shard:
    output:
        directory(f"{ROOT}/data/{{dataset}}/shards"),
    log:
        f"{ROOT}/logs/data/shard_{{dataset}}.log",
    params:
        data_root=config["data_root"],
        shard_size=config["shard_size"],
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("shard")
    # Training waits for the data; see rule train.
    priority: 2
    resources:
        **job_resources("shard"),
    shell:
        "fdrl shard --dataset {wildcards.dataset} --data-root {params.data_root} --out {output}"
        " --shard-size {params.shard_size} --workers {threads} > {log} 2>&1"


rule fit_prior:
    input:
        f"{ROOT}/data/{{dataset}}/shards",
    output:
        f"{ROOT}/data/{{dataset}}/prior.pt",
    log:
        f"{ROOT}/logs/data/fit_prior_{{dataset}}.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("fit_prior")
    # Training waits for the data; see rule train.
    priority: 2
    resources:
        # The float64 d x d accumulator, its Cholesky factor and the float32 copy written out.
        **job_resources("fit_prior", mem_mb=lambda wildcards: prior_memory_mb(wildcards.dataset)),
    shell:
        "OMP_NUM_THREADS={threads} fdrl fit-prior --shards {input} --out {output}"
        " --workers {threads} > {log} 2>&1"


rule fig11:
    input:
        expand(f"{ROOT}/data/{{dataset}}/prior.pt", dataset=config["prior_datasets"]),
    output:
        report(f"{ROOT}/figures/fig11_priors.png", caption=caption("fig11"), category="Priors"),
    log:
        f"{ROOT}/logs/figures/fig11.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small", mem_mb=max(1000, prior_memory_mb(*config["prior_datasets"]) // 2)),
    shell:
        "fdrl figure fig11 --out {output} {input} > {log} 2>&1"
