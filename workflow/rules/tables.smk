# Tables computed from the code alone: Table 2 (f and f' per divergence, checked numerically) and
# Table 3 (the network structures, with parameter counts). Table 1 is built in report.smk.


rule table_from_code:
    output:
        report(f"{ROOT}/{{table}}.csv", caption=caption("code_tables"),
               category="Tables 2-3"),
    log:
        f"{ROOT}/logs/tables/{{table}}.log",
    conda:
        "../envs/fdrl.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "OMP_NUM_THREADS={threads} fdrl table {wildcards.table} --out {output} > {log} 2>&1"
