# Image-to-image translation (Sec. 6.5): Table 4 and Fig. 7. The run of config["translation"]
# (trained with `prior: source` by rule train) translates the held-out source test images;
# their FID against the held-out target test images, per backend, sits beside that of the
# untranslated source images (the baseline). Where the scale has the digits classifier, it also
# says which translations kept their source image's label.


rule translate:
    input:
        run=lambda wildcards: f"{ROOT}/runs/{wildcards.run}/final.pt",
        source=f"{ROOT}/data/{{dataset}}/shards",
    output:
        f"{ROOT}/samples/{{run}}/translated_{{dataset}}/chunk-0000.npz",
    log:
        f"{ROOT}/logs/translate/{{run}}_{{dataset}}.log",
    params:
        run_dir=lambda wildcards, input: os.path.dirname(input.run),
        images=lambda wildcards: f"--images 0-{config['translation']['images'] - 1}"
        if config["translation"].get("images") else "",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("sample")
    resources:
        **job_resources("sample"),
    shell:
        "OMP_NUM_THREADS={threads} fdrl translate --run {params.run_dir} --source {input.source}"
        " {params.images} --out {output} > {log} 2>&1"


rule fid_translated:
    input:
        weights=fid_weights(),
        chunks=translated_chunk(),
        refs=fid_references(config["translation"]["target"]),
    output:
        per_backend(translation_fid("{backend}")),
    log:
        f"{ROOT}/logs/fid/translation.log",
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


rule fid_untranslated:
    input:
        weights=fid_weights(),
        shards=f"{ROOT}/data/{{dataset}}/shards",
        refs=fid_references(config["translation"]["target"]),
    output:
        per_backend(f"{ROOT}/fid/translation/untranslated_{{dataset}}_{{backend}}.json"),
    log:
        f"{ROOT}/logs/fid/untranslated_{{dataset}}.log",
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


rule classify_translated:
    input:
        chunk=translated_chunk(),
        classifier=f"{ROOT}/fid/classifier.pt",
    output:
        f"{ROOT}/translation/{{run}}_labels.json",
    log:
        f"{ROOT}/logs/translation/{{run}}_labels.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "OMP_NUM_THREADS={threads} fdrl classify --samples {input.chunk}"
        " --classifier {input.classifier} --out {output} > {log} 2>&1"


rule classify_real:
    input:
        shards=f"{ROOT}/data/{{dataset}}/shards",
        classifier=f"{ROOT}/fid/classifier.pt",
    output:
        f"{ROOT}/translation/real_{{dataset}}.json",
    log:
        f"{ROOT}/logs/translation/real_{{dataset}}.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "OMP_NUM_THREADS={threads} fdrl classify --shards {input.shards}"
        " --classifier {input.classifier} --out {output} > {log} 2>&1"


rule table4:
    input:
        table4_inputs(),
    output:
        report(f"{ROOT}/table4.csv", caption=caption("table4"), category="Translation"),
    log:
        f"{ROOT}/logs/tables/table4.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "fdrl table table4 --out {output} {input} > {log} 2>&1"


rule fig7:
    input:
        run=f"{ROOT}/runs/{config['translation']['run']}/final.pt",
        source=f"{ROOT}/data/{config['translation']['source']}/shards",
    output:
        report(f"{ROOT}/figures/fig7_translation.png", caption=caption("fig7"), category="Translation"),
    log:
        f"{ROOT}/logs/figures/fig7.log",
    params:
        run_dir=lambda wildcards, input: os.path.dirname(input.run),
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("evaluation")
    resources:
        **job_resources("evaluation"),
    shell:
        "OMP_NUM_THREADS={threads} fdrl figure fig7 --out {output} {params.run_dir} {input.source}"
        " > {log} 2>&1"
