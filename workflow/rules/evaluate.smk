# FID (docs/design.md#evaluation): reference statistics of each training set per backend (one job,
# reused by every run), then the FID of each run's samples against them, as JSON, and that of a
# held-out split's real images (the metric's floor). The backends'
# weights are DAG inputs where the workflow makes them: the digits classifier (the demo's
# "classifier FID") and, at smoke scale, seeded random Inception weights (labelled as such).


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
        unpack(lambda wildcards: fid_weights(wildcards.backend)),
        shards=f"{ROOT}/data/{{dataset}}/shards",
    output:
        f"{ROOT}/data/{{dataset}}/fid_ref_{{backend}}.npz",
    log:
        f"{ROOT}/logs/fid/fid_ref_{{dataset}}_{{backend}}.log",
    params:
        shards=reference_shards,
        weights=weights_option,
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("evaluation")
    resources:
        **job_resources("evaluation"),
    shell:
        "OMP_NUM_THREADS={threads} fdrl fid-ref --shards {params.shards} --backend {wildcards.backend}"
        " {params.weights} --workers {threads} --out {output} > {log} 2>&1"


FID_SHELL = (
    "OMP_NUM_THREADS={threads} fdrl fid --samples {input.chunks} --ref {input.ref}"
    " --backend {wildcards.backend} {params.weights} --out {output} > {log} 2>&1"
)


rule fid:
    input:
        unpack(fid_inputs),
    output:
        f"{ROOT}/fid/{{run}}_{{backend}}.json",
    log:
        f"{ROOT}/logs/fid/{{run}}_{{backend}}.log",
    params:
        weights=weights_option,
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("evaluation")
    resources:
        **job_resources("evaluation"),
    shell:
        FID_SHELL


rule fid_flow_length:
    input:
        unpack(fid_inputs),
    output:
        f"{ROOT}/fid/steps-{{steps}}/{{run}}_{{backend}}.json",
    log:
        f"{ROOT}/logs/fid/steps-{{steps}}/{{run}}_{{backend}}.log",
    params:
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
        held_out_fid("{dataset}", "{backend}"),
    log:
        f"{ROOT}/logs/fid/held_out_{{dataset}}_{{backend}}.log",
    params:
        shards=reference_shards,
        weights=weights_option,
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("evaluation")
    resources:
        **job_resources("evaluation"),
    shell:
        "OMP_NUM_THREADS={threads} fdrl fid --shards {params.shards} --ref {input.ref}"
        " --backend {wildcards.backend} {params.weights} --out {output} > {log} 2>&1"
