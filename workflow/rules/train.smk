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
    threads: job_threads("train")
    # Training jobs are the longest: started first (after the data they need), they leave the
    # short jobs to fill the cores beside them, rather than one of them running alone at the end.
    priority: 1
    resources:
        # One process that sees all the job's GPUs and starts torchrun itself: without
        # tasks_per_gpu=0 the SLURM plugin would run the command once per GPU.
        **job_resources("train", tasks_per_gpu=0),
    shell:
        "OMP_NUM_THREADS={threads} fdrl launch --gpus-per-node {resources.gpu} --"
        " train --out {params.run_dir} {params.options} > {log} 2>&1"
