# Generation (Algorithm 2): each run's n_samples images, as chunks of chunk_size seeds that a
# cluster generates in parallel, one job each. Image i is seed i's alone, so chunks never overlap
# and a chunk regenerated later is identical.


rule sample:
    input:
        f"{ROOT}/runs/{{run}}/final.pt",
    output:
        f"{ROOT}/samples/{{run}}/chunk-{{chunk}}.npz",
    log:
        f"{ROOT}/logs/sample/{{run}}/chunk-{{chunk}}.log",
    params:
        run_dir=lambda wildcards: f"{ROOT}/runs/{wildcards.run}",
        seeds=lambda wildcards: chunk_seeds(int(wildcards.chunk)),
    conda:
        "../envs/fdrl.yaml"
    threads: lambda wildcards: config["sample_resources"]["threads"]
    resources:
        gpu=lambda wildcards: config["sample_resources"]["gpus"],
        mem_mb=lambda wildcards: config["sample_resources"]["mem_mb"],
        runtime=lambda wildcards: config["sample_resources"]["runtime"],
    shell:
        "OMP_NUM_THREADS={threads} fdrl sample --run {params.run_dir} --seeds {params.seeds}"
        " --out {output} > {log} 2>&1"
