# Generation (Algorithm 2): each run's n_samples images, as chunks of chunk_size seeds that a
# cluster generates in parallel, one job each. Image i is seed i's alone, so chunks never overlap
# and a chunk regenerated later is identical. Fig. 5 samples the same seeds at other total flow
# lengths K + kappa (steps-{steps}/); steps-0 holds the prior's samples, not flowed at all.

SAMPLE_SHELL = (
    "OMP_NUM_THREADS={threads} fdrl sample --run {params.run_dir} --seeds {params.seeds}"
    " {params.steps} --out {output} > {log} 2>&1"
)


rule sample:
    input:
        f"{ROOT}/runs/{{run}}/final.pt",
    output:
        f"{ROOT}/samples/{{run}}/chunk-{{chunk}}.npz",
    log:
        f"{ROOT}/logs/sample/{{run}}/chunk-{{chunk}}.log",
    params:
        run_dir=lambda wildcards: f"{ROOT}/runs/{wildcards.run}",
        seeds=lambda wildcards: chunk_seeds(int(wildcards.chunk), config["sampling"]["n_samples"]),
        steps="",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("sample")
    resources:
        **job_resources("sample"),
    shell:
        SAMPLE_SHELL


rule sample_flow_length:
    input:
        f"{ROOT}/runs/{{run}}/final.pt",
    output:
        f"{ROOT}/samples/{{run}}/steps-{{steps}}/chunk-{{chunk}}.npz",
    log:
        f"{ROOT}/logs/sample/{{run}}/steps-{{steps}}/chunk-{{chunk}}.log",
    params:
        run_dir=lambda wildcards: f"{ROOT}/runs/{wildcards.run}",
        seeds=lambda wildcards: chunk_seeds(int(wildcards.chunk), config["flow_length"]["n_samples"]),
        steps=lambda wildcards: f"--steps {wildcards.steps}",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("sample")
    resources:
        **job_resources("sample"),
    shell:
        SAMPLE_SHELL
