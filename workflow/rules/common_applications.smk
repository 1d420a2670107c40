# Names, paths and input functions of the paper's two applications (no rules here): translation
# (Table 4, Fig. 7; translation.smk) and class-conditional generation (Fig. 6;
# class_conditional.smk). They build on common.smk's helpers, included before this file.


# --- translation (Table 4, Fig. 7) --------------------------------------------------------------
#
# config["translation"]: a run trained with `prior: source`, the held-out source split it
# translates, and the held-out target split its FID is measured against. Where the scale has the
# digits classifier (its FID backends include `classifier`), the classifier also says how many
# translations kept their source image's label.


def measured_by_classifier():
    """Whether this scale has the digits classifier to measure labels with (demo, smoke)."""
    return "classifier" in config["evaluation"]["backends"]


def translated_chunk():
    """The chunk of the translated test images."""
    t = config["translation"]
    return f"{ROOT}/samples/{t['run']}/translated_{t['source']}/chunk-0000.npz"


def translation_fid(backend):
    """FID of the translated test images against the target test images' reference."""
    return f"{ROOT}/fid/translation/{config['translation']['run']}_{backend}.json"


def untranslated_fid(backend):
    """FID of the untranslated source test images against the same reference (the baseline)."""
    return f"{ROOT}/fid/translation/untranslated_{config['translation']['source']}_{backend}.json"


def table4_inputs():
    """Table 4's FID results (translated, then untranslated, per backend) and, where measured,
    the classifier's verdicts on the translations and on the real source and target images."""
    backends = config["evaluation"]["backends"]
    inputs = [translation_fid(b) for b in backends] + [untranslated_fid(b) for b in backends]
    if measured_by_classifier():
        t = config["translation"]
        inputs += [f"{ROOT}/translation/{t['run']}_labels.json",
                   *(f"{ROOT}/translation/real_{split}.json" for split in (t["source"], t["target"]))]
    return inputs


# --- class-conditional generation (Fig. 6) ------------------------------------------------------
#
# config["class_conditional"]: an LR-KL run, the guide (a robust digits classifier the workflow
# trains, or a staged file: the paper's cifar_l2_1_0.pt), phi, the step factor c, K + kappa and
# the number of samples (seed i conditioned on class i mod 10). With the digits classifier the
# samples are measured (class_conditional.csv), with a standard guide beside the robust one, and
# over the trade-off grid of phi and c (Fig. 6's trade-off figure).


def cc_setting(guide, phi, factor):
    """The folder-name tag of one conditional setting."""
    return f"conditional_{guide}_phi{phi}_c{factor}"


def cc_chunk(guide, phi, factor):
    """The chunk of one conditional setting's samples."""
    return f"{ROOT}/samples/{config['class_conditional']['run']}/{cc_setting(guide, phi, factor)}/chunk-0000.npz"


def cc_result(tag):
    """A `fdrl classify` result of the conditional run's samples (`unguided` or a setting tag)."""
    return f"{ROOT}/class_conditional/{config['class_conditional']['run']}_{tag}.json"


def guide_trained():
    """Whether the workflow trains the guide (a digits classifier) rather than reading a file."""
    return "file" not in config["class_conditional"]["guide"]


def guide_input(wildcards):
    """The guide as a DAG input where the workflow trains it; a staged file is a parameter, so
    that a cluster plans the DAG before the file is there and the sampling job names it."""
    return {"guide": f"{ROOT}/class_conditional/guide_{wildcards.guide}.pt"} if guide_trained() else {}


def guide_path(wildcards, input):
    """The guide's file: the trained one, or the staged file of the config."""
    return input.guide if guide_trained() else config["class_conditional"]["guide"]["file"]


def chosen_setting():
    """The (phi, factor) of the conditional samples Fig. 6 shows, as wildcard strings."""
    cc = config["class_conditional"]
    return f"{cc['phi']:g}", f"{cc['step_factor']:g}"


def classify_inputs(chunks):
    """A classify job's chunks, the measuring classifier, and the real digits of each class."""
    run = config["class_conditional"]["run"]
    return {"chunks": chunks, "classifier": f"{ROOT}/fid/classifier.pt",
            "real": f"{ROOT}/data/{run_settings(run)['dataset']}/shards"}


def per_class_count():
    """Per-class FIDs compare as many guided as unguided samples of each class: the guided
    samples' share of a class (seed i is conditioned on class i mod 10)."""
    return config["class_conditional"]["n_samples"] // 10


def tradeoff_results():
    """The `fdrl classify` results of Fig. 6's trade-off: the unguided samples, then each (phi,
    c) of the grid with the robust guide, and the chosen setting with a standard guide."""
    cc = config["class_conditional"]
    tradeoff = cc.get("tradeoff", {"phi": [cc["phi"]], "step_factor": [cc["step_factor"]]})
    grid = [(f"{phi:g}", f"{c:g}") for c in tradeoff["step_factor"] for phi in tradeoff["phi"]]
    return [cc_result("unguided"), *(cc_result(cc_setting("robust", p, c)) for p, c in grid),
            cc_result(cc_setting("standard", *chosen_setting()))]
