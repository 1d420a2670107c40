# Generation (Algorithm 2): each run's n_samples images, as chunks of chunk_size seeds that a
# cluster generates in parallel, one job each. Image i is seed i's alone, so chunks never overlap
# and a chunk regenerated later is identical. Fig. 5 samples the same seeds at other total flow
# lengths K + kappa (steps-{steps}/); steps-0 holds the prior's samples, not flowed at all.
# Fig. 5's run makes every flowed length of a chunk in one job, from one flow of the longest
# (`fdrl sample --steps 20,40,...`: a flow of L steps is the first L steps of a longer one), so
# Fig. 5 costs the longest flow rather than the sum of them. 0 steps (the prior's draw, Table
# 1's baseline row, which needs no flow) and any length of another run are a job each.

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


# The lengths above 0 of Fig. 5's run.
FLOWED_LENGTHS = [n for n in config["flow_length"]["steps"] if n > 0]

if FLOWED_LENGTHS:

    rule sample_flow_lengths:
        input:
            f"{ROOT}/runs/{{run}}/final.pt",
        output:
            [f"{ROOT}/samples/{{run}}/steps-{n}/chunk-{{chunk}}.npz" for n in FLOWED_LENGTHS],
        log:
            f"{ROOT}/logs/sample/{{run}}/flow_lengths/chunk-{{chunk}}.log",
        wildcard_constraints:
            run=one_of([config["flow_length"]["run"]]),
        params:
            run_dir=lambda wildcards: f"{ROOT}/runs/{wildcards.run}",
            seeds=lambda wildcards: chunk_seeds(int(wildcards.chunk),
                                                config["flow_length"]["n_samples"]),
            steps="--steps " + ",".join(str(n) for n in FLOWED_LENGTHS),
            out=lambda wildcards: f"{ROOT}/samples/{wildcards.run}/steps-{{steps}}/chunk-{wildcards.chunk}.npz",
        conda:
            "../envs/fdrl.yaml"
        threads: job_threads("sample")
        resources:
            **job_resources("sample"),
        shell:
            "OMP_NUM_THREADS={threads} fdrl sample --run {params.run_dir} --seeds {params.seeds}"
            " {params.steps} --out '{params.out}' > {log} 2>&1"

    ruleorder: sample_flow_lengths > sample_flow_length


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
