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

# FID backends of `fdrl fid` (DESIGN.md section 10).
FID_BACKENDS = ["pytorch-fid", "clean-fid", "classifier"]


def one_of(names):
    """A wildcard regex matching exactly one of the given names."""
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    experiment=one_of(TOYS),
    dataset=one_of(DATASET_SHAPES),
    run="[A-Za-z0-9_.-]+",
    chunk="[0-9]{4}",
    steps="[0-9]+",
    table=one_of(CODE_TABLES),
    backend=one_of(FID_BACKENDS),


def caption(name):
    """The caption file (workflow/report/) of a table or figure in Snakemake's report."""
    return Path(workflow.basedir) / "workflow/report" / f"{name}.rst"


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


def chunk_seeds(chunk, n_samples):
    """The seeds of sample chunk `chunk`: chunk_size consecutive ones, the last chunk shorter."""
    size = config["sampling"]["chunk_size"]
    first = chunk * size
    last = min(first + size, n_samples) - 1
    return f"{first}-{last}"


def sample_chunks(run, steps=None):
    """The chunk files of a run's samples: its n_samples at its own K + kappa, or (Fig. 5)
    flow_length's n_samples at `steps` flow steps."""
    if steps is None:
        folder, n = f"{ROOT}/samples/{run}", config["sampling"]["n_samples"]
    else:
        folder, n = f"{ROOT}/samples/{run}/steps-{steps}", config["flow_length"]["n_samples"]
    count = -(-n // config["sampling"]["chunk_size"])
    return [f"{folder}/chunk-{chunk:04d}.npz" for chunk in range(count)]


def fid_weights(backend):
    """The weights `fdrl fid` and `fdrl fid-ref` are given for a backend, as a DAG input: the
    digits classifier the workflow trains, the random Inception stand-ins it writes (smoke), an
    explicit path from the config, or nothing (the library's cache)."""
    if backend == "classifier":
        return {"weights": f"{ROOT}/fid/classifier.pt"}
    weights = config["evaluation"]["inception_weights"]
    if weights == "random":
        return {"weights": f"{ROOT}/fid/random_inception_weights"}
    return {"weights": weights} if weights else {}


def weights_option(wildcards, input):
    """`--weights PATH` where the backend's weights are a DAG input, else nothing."""
    return f"--weights {shlex.quote(input.weights)}" if "weights" in input.keys() else ""


def reference_shards(wildcards, input):
    """The training shards reference statistics are computed from: the whole folder, or (small
    scales) its first evaluation.reference_shards shard files."""
    first = config["evaluation"]["reference_shards"]
    if not first:
        return input.shards
    return " ".join(f"{input.shards}/train-{i:06d}.tar" for i in range(first))


def run_fid(run, backend, steps=None):
    """The FID result of a run's samples (or of its samples at `steps` flow steps)."""
    folder = f"{ROOT}/fid" if steps is None else f"{ROOT}/fid/steps-{steps}"
    return f"{folder}/{run}_{backend}.json"


def table1_inputs():
    """Table 1's FID results, rows in order: each run (per backend), then the prior baseline."""
    backends = config["evaluation"]["backends"]
    fids = [run_fid(run, b) for run in config["table1"]["runs"] for b in backends]
    baseline = config["table1"].get("prior_baseline")
    if baseline:
        fids += [run_fid(baseline, b, steps=0) for b in backends]
    return fids


def evaluation_resources():
    """Threads, GPUs, memory and runtime of FID, reference and figure jobs."""
    return config["evaluation_resources"]


def scaled(paper, demo, smoke):
    """A per-scale value (runtimes in minutes, memory), picked by config["scale"]."""
    return {"paper": paper, "demo": demo, "smoke": smoke}[config["scale"]]


def sample_resources():
    """Threads, GPUs, memory and runtime of a sample-chunk job (config["sample_resources"])."""
    return config["sample_resources"]


def fid_inputs(wildcards):
    """A FID job's chunks, the reference of the run's training set, and the backend's weights."""
    steps = wildcards.get("steps")
    dataset = run_settings(wildcards.run)["dataset"]
    return {
        "chunks": sample_chunks(wildcards.run, None if steps is None else int(steps)),
        "ref": f"{ROOT}/data/{dataset}/fid_ref_{wildcards.backend}.npz",
        **fid_weights(wildcards.backend),
    }


def figure_run(key):
    """The final.pt of the run config["figures"][key] names."""
    return f"{ROOT}/runs/{config['figures'][key]}/final.pt"


def nearest_inputs(wildcards):
    """Fig. 12's sample chunk (the first of the run) and the run's training shards."""
    run = nearest_figures()[f"{ROOT}/figures/fig12_nearest_{wildcards.dataset}.png"]
    return {"chunk": sample_chunks(run)[0], "shards": f"{ROOT}/data/{wildcards.dataset}/shards",
            **fid_weights(config["evaluation"]["backends"][0])}


def nearest_figures():
    """Figs. 12-13: one nearest-neighbour figure per run of config["figures"]["nearest"]."""
    return {f"{ROOT}/figures/fig12_nearest_{run_settings(run)['dataset']}.png": run
            for run in config["figures"]["nearest"]}


def all_targets():
    """Every target of the chosen scale that the workflow knows so far (rule all)."""
    return [
        *(f"{ROOT}/{table}.csv" for table in CODE_TABLES),
        f"{ROOT}/table1.csv",
        f"{ROOT}/toy.csv",
        f"{ROOT}/figures/fig2_stale_estimator.png",
        f"{ROOT}/figures/fig3_fdrl_progression.png",
        *(f"{ROOT}/figures/fig4_samples_{run}.png" for run in config["table1"]["runs"]),
        f"{ROOT}/figures/fig5_flow_length.png",
        f"{ROOT}/figures/fig8_flow_process.png",
        f"{ROOT}/figures/fig9_interpolation.png",
        f"{ROOT}/figures/fig10_swissroll.png",
        f"{ROOT}/figures/fig11_priors.png",
        *nearest_figures(),
        *(f"{ROOT}/runs/{run}/final.pt" for run in config["runs"]),
    ]
