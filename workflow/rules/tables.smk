# Tables computed from the code alone: Table 2 (f and f' per divergence, checked numerically) and
# Table 3 (the network structures, with parameter counts). Table 1 and Table 4 join them once the
# training and FID stages exist.


rule table_from_code:
    output:
        f"{ROOT}/{{table}}.csv",
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
