# Tables computed from the code alone: Table 2 (f and f' per divergence, checked numerically) and
# Table 3 (the network structures, with parameter counts). Table 1 is built in table1.smk.


rule table_from_code:
    output:
        report(f"{ROOT}/{{table}}.csv", caption=caption("code_tables"),
               category="Tables 2-3"),
    log:
        f"{ROOT}/logs/tables/{{table}}.log",
    conda:
        "../envs/fdrl.yaml"
    threads: job_threads("small")
    resources:
        **job_resources("small"),
    shell:
        "OMP_NUM_THREADS={threads} fdrl table {wildcards.table} --out {output} > {log} 2>&1"
