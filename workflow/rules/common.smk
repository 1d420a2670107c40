# Names, paths and input functions shared by the rules (no rules here).
#
# Every path derives from config["root"] (DESIGN.md section 7): results/ at paper scale,
# results/demo/ and results/smoke/ at the other scales, so scales never overwrite each other.

import os
import re
import shlex

ROOT = config["root"]

# The paper's 2-D experiments (Figs. 2, 3, 10) as `fdrl toy` names them. The first three use the
# Gaussians of Sec. 3.1 and take config["toy"]["gaussians"]; the swiss-roll ones (one per legal
# pairing, Appendix C) take config["toy"]["swissroll"]. Spelled out rather than imported from
# fdrl so that planning the DAG (and every cluster job's start-up) does not import torch.
GAUSSIAN_TOYS = ["stale_near", "stale_far", "fdrl_far"]
PAIRINGS = ["lsif-pearson", "lr-kl", "lr-js", "lr-logd"]
SWISSROLL_TOYS = [f"swissroll_{pairing}" for pairing in PAIRINGS]
TOYS = GAUSSIAN_TOYS + SWISSROLL_TOYS

# Datasets `fdrl shard` knows, with their image sizes (DESIGN.md section 3).
DATASET_SHAPES = {
    "digits": (1, 8, 8),
    "cifar10": (3, 32, 32),
    "celeba": (3, 64, 64),
    "lsun_church": (3, 128, 128),
    **{f"cat2dog_{split}": (3, 64, 64) for split in ("trainA", "trainB", "testA", "testB")},
}

# Tables that `fdrl table` computes from the code alone, with no input file.
CODE_TABLES = ["table2", "table3"]


def one_of(names):
    """A wildcard regex matching exactly one of the given names."""
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    experiment=one_of(TOYS),
    dataset=one_of(DATASET_SHAPES),
    run="[A-Za-z0-9_.-]+",
    chunk="[0-9]{4}",
    table=one_of(CODE_TABLES),


def toy_dir(experiment):
    """The folder `fdrl toy EXPERIMENT` writes samples.npz and metrics.json into."""
    return f"{ROOT}/toy/{experiment}"


def toy_samples(*experiments):
    """The samples.npz of each experiment, in the order given (figure panels follow it)."""
    return [f"{toy_dir(e)}/samples.npz" for e in experiments]


def toy_metrics(*experiments):
    """The metrics.json of each experiment, in the order given."""
    return [f"{toy_dir(e)}/metrics.json" for e in experiments]


def set_options(overrides):
    """Turns a mapping of hyperparameter overrides into `--set key=value ...` options.

    Values go through verbatim, but for lists (comma-joined, as in `lr_milestones=5000,10000`) and
    booleans (`true`/`false`, as YAML spells them); each option is shell-quoted.
    """
    options = []
    for key, value in overrides.items():
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        options += ["--set", shlex.quote(f"{key}={value}")]
    return " ".join(options)


def toy_overrides(wildcards):
    """The `--set` options of a 2-D experiment, from its family's mapping in config["toy"]."""
    family = "gaussians" if wildcards.experiment in GAUSSIAN_TOYS else "swissroll"
    return set_options(config["toy"][family])


def prior_memory_mb(*datasets):
    """Memory for fitting (or loading) the priors: float64 d x d accumulators, factor, copies."""
    d = max(c * h * w for c, h, w in (DATASET_SHAPES[name] for name in datasets))
    return 1000 + 3 * 8 * d * d // 2**20


def run_settings(run):
    """The run's entry of config["runs"] over the scale's config["train"]."""
    if run not in config["runs"]:
        raise ValueError(f"unknown run {run!r}; the config's runs are {', '.join(config['runs'])}")
    return {**config["train"], **config["runs"][run]}


def train_inputs(wildcards):
    """The run's shards, and its prior: prior.pt (data) or the source domain's shards."""
    run = run_settings(wildcards.run)
    inputs = {"shards": f"{ROOT}/data/{run['dataset']}/shards"}
    if run["prior"] == "data":
        inputs["prior"] = f"{ROOT}/data/{run['dataset']}/prior.pt"
    elif run["prior"] == "source":
        inputs["source"] = f"{ROOT}/data/{run['source_dataset']}/shards"
    return inputs


def train_options(wildcards, input):
    """`--set` options of `fdrl train`: the data paths, then every other setting of the run."""
    run = run_settings(wildcards.run)
    paths = {"data": input.shards, "prior": run["prior"], "prior_path": input.get("prior", ""),
             "source": input.get("source", "")}
    rest = {k: v for k, v in run.items() if k not in ("dataset", "source_dataset", "prior")}
    return set_options({**{k: v for k, v in paths.items() if v}, **rest})


def train_resources(wildcards):
    """Threads, GPUs, memory and runtime of a run's job (config["train_resources"])."""
    return config["train_resources"]


def chunk_seeds(chunk):
    """The seeds of sample chunk `chunk`: chunk_size consecutive ones, the last chunk shorter."""
    size = config["sampling"]["chunk_size"]
    first = chunk * size
    last = min(first + size, config["sampling"]["n_samples"]) - 1
    return f"{first}-{last}"


def scaled(paper, demo, smoke):
    """A per-scale value (runtimes in minutes, memory), picked by config["scale"]."""
    return {"paper": paper, "demo": demo, "smoke": smoke}[config["scale"]]


def all_targets():
    """Every target of the chosen scale that the workflow knows so far (rule all)."""
    return [
        *(f"{ROOT}/{table}.csv" for table in CODE_TABLES),
        f"{ROOT}/toy.csv",
        f"{ROOT}/figures/fig2_stale_estimator.png",
        f"{ROOT}/figures/fig3_fdrl_progression.png",
        f"{ROOT}/figures/fig10_swissroll.png",
        f"{ROOT}/figures/fig11_priors.png",
        *(f"{ROOT}/runs/{run}/final.pt" for run in config["runs"]),
    ]
