# Names, paths, resources and input functions shared by the rules (no rules here), in the order of
# the pipeline: every stage, the 2-D experiments, data, training, sampling, FID, Table 1 and its
# figures, and `rule all`; those of translation and class-conditional generation are in
# common_applications.smk.
#
# Every path derives from config["root"] (docs/design.md#formats): results/ at paper scale,
# results/demo/ and results/smoke/ at the other scales, so scales never overwrite each other.
# The names of datasets, experiments, tables and FID backends come from the fdrl package, from
# modules that do not import torch, so that planning the DAG (and every cluster job's start-up)
# stays fast.

import json
import re
import shlex

import yaml
from snakemake.exceptions import WorkflowError

from fdrl.datasets import DATASETS
from fdrl.names import CODE_TABLES, FID_BACKENDS, GAUSSIAN_TOYS, SWISSROLL_TOYS, TOYS

ROOT = config["root"]


def one_of(names):
    """A wildcard regex matching exactly one of the given names."""
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    experiment=one_of(TOYS),
    dataset=one_of(DATASETS),
    run="[A-Za-z0-9_.-]+",
    chunk="[0-9]{4}",
    guide="robust|standard",
    phi="[0-9.]+",
    factor="[12]",
    steps="[0-9]+",
    table=one_of(CODE_TABLES),
    backend=one_of(FID_BACKENDS),


# --- every stage --------------------------------------------------------------------------------


def caption(name):
    """The caption file (workflow/report/) of a table or figure in Snakemake's report."""
    return Path(workflow.basedir) / "workflow/report" / f"{name}.rst"


def job_threads(kind):
    """The threads of a job of `kind` (a key of config["resources"])."""
    return config["resources"][kind]["threads"]


def job_resources(kind, **extra):
    """What a job of `kind` asks of the cluster or the machine (config["resources"][kind]): GPUs,
    memory and runtime, and `extra` (memory computed from the data, plugin settings)."""
    settings = config["resources"][kind]
    asked = {"gpu": settings["gpus"], "runtime": settings["runtime"]}
    if "mem_mb" in settings:
        asked["mem_mb"] = settings["mem_mb"]
    return {**asked, **extra}


def yaml_value(value):
    """`value` written so that YAML reads it back unchanged: a plain string where that is safe
    (paths, names), JSON otherwise (numbers, booleans, lists; JSON is YAML)."""
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)


def set_options(settings):
    """A mapping of settings as `--set key=value ...` options of an fdrl verb, each shell-quoted;
    fdrl reads each value as YAML, so lists travel as YAML lists."""
    return " ".join(f"--set {shlex.quote(f'{key}={yaml_value(value)}')}"
                    for key, value in settings.items())


def check_site_settings():
    """Stops a run (dry runs included) whose SLURM profile still holds the placeholders of
    cluster_profiles/slurm/config.yaml, before any job is submitted."""
    given = getattr(workflow.resource_settings.default_resources, "args", None) or []
    left = [str(a) for a in given if "YOUR_PARTITION" in str(a) or "YOUR_ACCOUNT" in str(a)]
    if left:
        raise WorkflowError(
            f"the SLURM profile still holds its placeholders ({', '.join(left)}): set "
            "slurm_partition and slurm_account under default-resources in "
            "cluster_profiles/slurm/config.yaml to your cluster's values (sinfo -s; sacctmgr "
            "show associations user=$USER)")


# --- the 2-D experiments ------------------------------------------------------------------------


def toy_dir(experiment):
    """The folder `fdrl toy EXPERIMENT` writes samples.npz and metrics.json into."""
    return f"{ROOT}/toy/{experiment}"


def toy_samples(*experiments):
    """The samples.npz of each experiment, in the order given (figure panels follow it)."""
    return [f"{toy_dir(e)}/samples.npz" for e in experiments]


def toy_metrics(*experiments):
    """The metrics.json of each experiment, in the order given."""
    return [f"{toy_dir(e)}/metrics.json" for e in experiments]


def toy_overrides(wildcards):
    """The `--set` options of a 2-D experiment, from its family's mapping in config["toy"]."""
    family = "gaussians" if wildcards.experiment in GAUSSIAN_TOYS else "swissroll"
    return set_options(config["toy"][family])


# --- data ---------------------------------------------------------------------------------------


def prior_memory_mb(*datasets):
    """Memory for fitting (or loading) the priors: float64 d x d accumulators, factor, copies."""
    d = max(c * h * w for c, h, w in (DATASETS[name].shape for name in datasets))
    return 1000 + 3 * 8 * d * d // 2**20


# --- training -----------------------------------------------------------------------------------


def run_settings(run):
    """The run's entry of config["runs"] over the scale's config["train"]."""
    if run not in config["runs"]:
        raise ValueError(f"unknown run {run!r}; the config's runs are {', '.join(config['runs'])}")
    return {**config["train"], **config["runs"][run]}


def train_paths(run):
    """The run's shards, and its prior: prior.pt (data) or the source domain's shards."""
    settings = run_settings(run)
    paths = {"shards": f"{ROOT}/data/{settings['dataset']}/shards"}
    if settings["prior"] == "data":
        paths["prior"] = f"{ROOT}/data/{settings['dataset']}/prior.pt"
    elif settings["prior"] == "source":
        paths["source"] = f"{ROOT}/data/{settings['source_dataset']}/shards"
    return paths


def train_inputs(wildcards):
    """The DAG inputs of a run's training: its `train_paths`."""
    return train_paths(wildcards.run)


def train_settings(run, paths):
    """The settings `fdrl train` gets for a run: the data paths, then every other setting."""
    settings = run_settings(run)
    given = {"data": paths["shards"], "prior": settings["prior"],
             "prior_path": paths.get("prior", ""), "source": paths.get("source", "")}
    rest = {k: v for k, v in settings.items() if k not in ("dataset", "source_dataset", "prior")}
    return {**{k: v for k, v in given.items() if v}, **rest}


def train_options(wildcards, input):
    """`--set` options of `fdrl train` (`train_settings`)."""
    return set_options(train_settings(wildcards.run, dict(input.items())))


def check_runs():
    """Reads every run's settings as `fdrl train` will (fdrl.config.make_config), so that a
    misspelled key or a value of the wrong type stops the workflow when it loads, with the run's
    name and fdrl's own sentence, rather than in the run's job hours later. The main process
    alone checks: jobs do not wait for the import of torch."""
    from fdrl.config import make_config
    from fdrl.errors import FdrlError

    for run in config["runs"]:
        try:
            make_config(train_settings(run, train_paths(run)), f"run {run} of the workflow config")
        except FdrlError as err:
            raise WorkflowError(str(err)) from None


# --- sampling -----------------------------------------------------------------------------------


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


# --- FID ----------------------------------------------------------------------------------------


BACKENDS = config["evaluation"]["backends"]


def per_backend(pattern):
    """`pattern` with its {backend} filled in by each FID backend of the scale, in order, its
    other wildcards kept: one `fdrl fid` or `fdrl fid-ref` job serves every backend (each image
    read once, the process started once), one file per backend."""
    return [pattern.replace("{backend}", backend) for backend in BACKENDS]


def backend_weights(backend):
    """The weights `fdrl` is given for a backend: the digits classifier the workflow trains, the
    random Inception stand-ins it writes (smoke), an explicit path from the config, or None (the
    library's cache)."""
    if backend == "classifier":
        return f"{ROOT}/fid/classifier.pt"
    weights = config["evaluation"]["inception_weights"]
    if weights == "random":
        return f"{ROOT}/fid/random_inception_weights"
    return weights or None


def fid_weights():
    """The backends' weights as a DAG input (those from the library's cache are not)."""
    return sorted({w for w in map(backend_weights, BACKENDS) if w})


def weights_option(wildcards):
    """`--weights BACKEND=PATH` for each backend not read from the library's cache."""
    return " ".join(f"--weights {shlex.quote(f'{b}={w}')}"
                    for b in BACKENDS if (w := backend_weights(b)))


def reference_shards(wildcards, input):
    """The real images FID statistics are computed from (a training set's reference, a held-out
    split's row): the whole shard folder, or (small scales) its first
    evaluation.reference_shards shard files."""
    first = config["evaluation"]["reference_shards"]
    if not first:
        return input.shards
    split = "test" if DATASETS[wildcards.dataset].held_out_from else "train"
    return " ".join(f"{input.shards}/{split}-{i:06d}.tar" for i in range(first))


def fid_references(dataset):
    """The FID reference statistics of a dataset's images, one per backend."""
    return per_backend(f"{ROOT}/data/{dataset}/fid_ref_{{backend}}.npz")


def run_fid(run, backend, steps=None):
    """The FID result of a run's samples (or of its samples at `steps` flow steps)."""
    folder = f"{ROOT}/fid" if steps is None else f"{ROOT}/fid/steps-{steps}"
    return f"{folder}/{run}_{backend}.json"


def fid_inputs(wildcards):
    """A FID job's chunks, the references of the run's training set, and the weights."""
    steps = wildcards.get("steps")
    dataset = run_settings(wildcards.run)["dataset"]
    return {
        "chunks": sample_chunks(wildcards.run, None if steps is None else int(steps)),
        "refs": fid_references(dataset),
        "weights": fid_weights(),
    }


def held_out_fid(dataset, backend):
    """The FID result of a held-out split's real images against its training set's reference."""
    return f"{ROOT}/fid/held_out/{dataset}_{backend}.json"


def held_out_inputs(wildcards):
    """A held-out FID job's shards, the references of the training set it was held out from,
    and the weights."""
    return {
        "shards": f"{ROOT}/data/{wildcards.dataset}/shards",
        "refs": fid_references(DATASETS[wildcards.dataset].held_out_from),
        "weights": fid_weights(),
    }


# --- Table 1 and its figures --------------------------------------------------------------------


def table1_inputs():
    """Table 1's FID results, rows in order: each run (per backend), the prior baseline, then the
    held-out real images."""
    backends = config["evaluation"]["backends"]
    fids = [run_fid(run, b) for run in config["table1"]["runs"] for b in backends]
    baseline = config["table1"].get("prior_baseline")
    if baseline:
        fids += [run_fid(baseline, b, steps=0) for b in backends]
    fids += [held_out_fid(split, b) for split in config["table1"].get("held_out", []) for b in backends]
    return fids


def figure_run(key):
    """The final.pt of the run config["figures"][key] names."""
    return f"{ROOT}/runs/{config['figures'][key]}/final.pt"


def nearest_figures():
    """Figs. 12-13: one nearest-neighbour figure per run of config["figures"]["nearest"]."""
    return {f"{ROOT}/figures/fig12_nearest_{run_settings(run)['dataset']}.png": run
            for run in config["figures"]["nearest"]}


def nearest_inputs(wildcards):
    """Fig. 12's sample chunk (the first of the run) and the run's training shards."""
    run = nearest_figures()[f"{ROOT}/figures/fig12_nearest_{wildcards.dataset}.png"]
    weights = backend_weights(BACKENDS[0])
    return {"chunk": sample_chunks(run)[0], "shards": f"{ROOT}/data/{wildcards.dataset}/shards",
            **({"weights": weights} if weights else {})}


def nearest_weights(wildcards, input):
    """Fig. 12's `--weights PATH`: its backend's (the scale's first), where a DAG input."""
    return f"--weights {shlex.quote(input.weights)}" if "weights" in input.keys() else ""


# --- rule all -----------------------------------------------------------------------------------


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
        f"{ROOT}/table4.csv",
        f"{ROOT}/figures/fig7_translation.png",
        f"{ROOT}/figures/fig6_class_conditional.png",
        *([f"{ROOT}/class_conditional.csv", f"{ROOT}/figures/fig6_tradeoff.png"]
          if measured_by_classifier() else []),
        *(f"{ROOT}/runs/{run}/final.pt" for run in config["runs"] if run not in config["ablations"]),
    ]
