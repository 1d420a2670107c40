# Training (Algorithm 1): one job per run of the scale's experiment matrix (config["runs"]). The
# run's settings go to `fdrl train` as --set options: the run's own entry over config["train"]
# (the scale's common settings) over the code's defaults (the paper's CIFAR10 column). A failed
# or preempted job resumes from the newest checkpoint in its run folder when it is run again.


rule train:
    input:
        unpack(train_inputs),
    output:
        f"{ROOT}/runs/{{run}}/final.pt",
    log:
        f"{ROOT}/logs/train/{{run}}.log",
    params:
        run_dir=lambda wildcards: f"{ROOT}/runs/{wildcards.run}",
        options=train_options,
    conda:
        "../envs/fdrl.yaml"
    threads: lambda wildcards: train_resources(wildcards)["threads"]
    resources:
        gpu=lambda wildcards: train_resources(wildcards)["gpus"],
        # One process that sees all the job's GPUs and starts torchrun itself (LIBRARIES.md).
        tasks_per_gpu=0,
        mem_mb=lambda wildcards: train_resources(wildcards)["mem_mb"],
        runtime=lambda wildcards: train_resources(wildcards)["runtime"],
    shell:
        "OMP_NUM_THREADS={threads} fdrl launch --gpus-per-node {resources.gpu} --"
        " train --out {params.run_dir} {params.options} > {log} 2>&1"
