# Class-conditional generation (Sec. 6.4, Eq. 31): Fig. 6, and where the scale has the digits
# classifier, class_conditional.csv and the trade-off figure. The LR-KL run of
# config["class_conditional"] is composed with a guide: at the paper scale the robust CIFAR10
# ResNet50 staged by the user (a parameter, not an input, so that planning does not need it); at
# the small scales an L2-robust digits classifier trained here, and a standard one to compare.
# The ordinary digits classifier of the classifier FID measures the samples; no guide is it.


rule train_guide:
    output:
        f"{ROOT}/class_conditional/guide_{{guide}}.pt",
    log:
        f"{ROOT}/logs/class_conditional/train_guide_{{guide}}.log",
    params:
        # A seed of its own: the guide is not the classifier that measures the samples.
        options=lambda wildcards: " ".join(
            f"--{key.replace('_', '-')} {value}"
            for key, value in config["class_conditional"]["guide"].items()
            if wildcards.guide == "robust" or key != "robust_eps"),
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    # Conditional sampling waits for it, as training jobs wait for the data; see rule train.
    priority: 1
    resources:
        **job_resources("small"),
    shell:
        "OMP_NUM_THREADS={threads} fdrl train-classifier --seed 1 {params.options} --out {output}"
        " > {log} 2>&1"


rule sample_conditional:
    input:
        unpack(guide_input),
        run=f"{ROOT}/runs/{config['class_conditional']['run']}/final.pt",
    output:
        f"{ROOT}/samples/{config['class_conditional']['run']}/conditional_{{guide}}_phi{{phi}}_c{{factor}}/chunk-0000.npz",
    log:
        f"{ROOT}/logs/sample/conditional_{{guide}}_phi{{phi}}_c{{factor}}.log",
    params:
        run_dir=lambda wildcards, input: os.path.dirname(input.run),
        guide=guide_path,
        seeds=f"0-{config['class_conditional']['n_samples'] - 1}",
        steps=f"--steps {config['class_conditional']['steps']}"
        if config["class_conditional"].get("steps") else "",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("sample")
    resources:
        **job_resources("sample"),
    shell:
        "OMP_NUM_THREADS={threads} fdrl sample --run {params.run_dir} --seeds {params.seeds}"
        " {params.steps} --guide {params.guide} --phi {wildcards.phi}"
        " --step-factor {wildcards.factor} --out {output} > {log} 2>&1"


CLASSIFY_SHELL = (
    "OMP_NUM_THREADS={threads} fdrl classify --samples {input.chunks}"
    " --classifier {input.classifier} --real {input.real} --per-class {params.per_class}"
    " --out {output} > {log} 2>&1"
)


rule classify_conditional:
    input:
        **classify_inputs(cc_chunk("{guide}", "{phi}", "{factor}")),
    output:
        cc_result(cc_setting("{guide}", "{phi}", "{factor}")),
    log:
        f"{ROOT}/logs/class_conditional/classify_{{guide}}_phi{{phi}}_c{{factor}}.log",
    params:
        per_class=per_class_count(),
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        CLASSIFY_SHELL


rule classify_unguided:
    input:
        **classify_inputs(sample_chunks(config["class_conditional"]["run"])),
    output:
        cc_result("unguided"),
    log:
        f"{ROOT}/logs/class_conditional/classify_unguided.log",
    params:
        per_class=per_class_count(),
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        CLASSIFY_SHELL


rule class_conditional_table:
    input:
        tradeoff_results(),
    output:
        report(f"{ROOT}/class_conditional.csv", caption=caption("class_conditional"),
               category="Class-conditional"),
    log:
        f"{ROOT}/logs/tables/class_conditional.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "fdrl table class_conditional --out {output} {input} > {log} 2>&1"


rule fig6:
    input:
        cc_chunk("robust", *chosen_setting()),
    output:
        report(f"{ROOT}/figures/fig6_class_conditional.png", caption=caption("fig6"),
               category="Class-conditional"),
    log:
        f"{ROOT}/logs/figures/fig6.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "fdrl figure fig6 --out {output} {input} > {log} 2>&1"


rule fig6_tradeoff:
    input:
        tradeoff_results(),
    output:
        report(f"{ROOT}/figures/fig6_tradeoff.png", caption=caption("fig6_tradeoff"),
               category="Class-conditional"),
    log:
        f"{ROOT}/logs/figures/fig6_tradeoff.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "fdrl figure fig6_tradeoff --out {output} {input} > {log} 2>&1"
