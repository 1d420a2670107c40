# FID (docs/design.md#evaluation): reference statistics of each training set (one job for every
# backend, reused by every run), then the FID of each run's samples against them, one JSON per
# backend, and that of a held-out split's real images (the metric's floor). Each job passes its
# images once through every backend of the scale. The backends' weights are DAG inputs where the
# workflow makes them: the digits classifier (the demo's "classifier FID") and, at smoke scale,
# seeded random Inception weights (labelled as such).


rule train_classifier:
    output:
        f"{ROOT}/fid/classifier.pt",
    log:
        f"{ROOT}/logs/fid/train_classifier.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    params:
        epochs=config["evaluation"]["classifier_epochs"],
    shell:
        "OMP_NUM_THREADS={threads} fdrl train-classifier --epochs {params.epochs} --out {output}"
        " > {log} 2>&1"


rule random_inception_weights:
    output:
        directory(f"{ROOT}/fid/random_inception_weights"),
    log:
        f"{ROOT}/logs/fid/random_inception_weights.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "fdrl fetch-weights --random-seed 0 --to {output} > {log} 2>&1"


rule fid_ref:
    input:
        weights=fid_weights(),
        shards=f"{ROOT}/data/{{dataset}}/shards",
    output:
        per_backend(f"{ROOT}/data/{{dataset}}/fid_ref_{{backend}}.npz"),
    log:
        f"{ROOT}/logs/fid/fid_ref_{{dataset}}.log",
    params:
        shards=reference_shards,
        backends=" ".join(BACKENDS),
        weights=weights_option,
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("evaluation")
    resources:
        **job_resources("evaluation"),
    shell:
        "OMP_NUM_THREADS={threads} fdrl fid-ref --shards {params.shards} --backend {params.backends}"
        " {params.weights} --workers {threads} --out {output} > {log} 2>&1"


FID_SHELL = (
    "OMP_NUM_THREADS={threads} fdrl fid --samples {input.chunks} --ref {input.refs}"
    " --backend {params.backends} {params.weights} --out {output} > {log} 2>&1"
)


rule fid:
    input:
        unpack(fid_inputs),
    output:
        per_backend(run_fid("{run}", "{backend}")),
    log:
        f"{ROOT}/logs/fid/{{run}}.log",
    params:
        backends=" ".join(BACKENDS),
        weights=weights_option,
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("evaluation")
    resources:
        **job_resources("evaluation"),
    shell:
        FID_SHELL


# Fig. 5's FIDs at each flow length, every backend (a panel each); the prior baseline's row of
# Table 1 is the one at 0 steps.
rule fid_flow_length:
    input:
        unpack(fid_inputs),
    output:
        per_backend(run_fid("{run}", "{backend}", steps="{steps}")),
    log:
        f"{ROOT}/logs/fid/steps-{{steps}}/{{run}}.log",
    params:
        backends=" ".join(BACKENDS),
        weights=weights_option,
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("evaluation")
    resources:
        **job_resources("evaluation"),
    shell:
        FID_SHELL


rule fid_held_out:
    input:
        unpack(held_out_inputs),
    output:
        per_backend(held_out_fid("{dataset}", "{backend}")),
    log:
        f"{ROOT}/logs/fid/held_out_{{dataset}}.log",
    params:
        shards=reference_shards,
        backends=" ".join(BACKENDS),
        weights=weights_option,
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("evaluation")
    resources:
        **job_resources("evaluation"),
    shell:
        "OMP_NUM_THREADS={threads} fdrl fid --shards {params.shards} --ref {input.refs}"
        " --backend {params.backends} {params.weights} --out {output} > {log} 2>&1"
