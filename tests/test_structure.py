"""The shape of the code: imports run one way, modules and functions stay small, and the names the
command line and the workflow offer agree with the registries that implement them."""

import ast
import csv
import json
import subprocess
import sys
from pathlib import Path

import yaml

from fdrl import names

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "fdrl"

# Imports run one way (docs/design.md#code-layout): a module imports only from its own layer or
# the layers below it, never back up, and never in a circle.
LAYERS = {
    "utilities": ("errors", "io", "names", "noise", "distributed", "moments", "graphs",
                  "precision", "progress", "runlock"),
    "formats and readers": ("datasets", "data", "chunks", "images", "checkpoint", "result_files"),
    "the paper's concepts": ("losses", "divergences", "flow", "priors", "nets", "robust_resnet",
                             "ema", "step"),
    "configuration": ("config",),
    "stages": ("shards", "prior_fit", "train", "classifier", "guides", "sampling", "translation",
               "features", "fid", "class_metrics", "tables", "figures", "toy"),
    "entry points": ("launch", "profiles", "cli", "__main__", "__init__"),
}
RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}


def module_of(path: Path) -> str:
    """A module's name in the import graph: its stem, or its subpackage's name (`fdrl/cli/`)."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def imports_of(path: Path) -> set[str]:
    """The fdrl modules a file imports, at its top or inside a function."""
    modules = {module_of(p) for p in PACKAGE.rglob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("fdrl.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "fdrl":
                found |= {a.name for a in node.names if a.name in modules}
            elif node.module.startswith("fdrl."):
                found.add(node.module.split(".")[1])
    return found - {module_of(path)}


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        graph.setdefault(module_of(path), set()).update(imports_of(path))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules that import each other in a circle, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_have_no_cycle_and_never_go_up_a_layer():
    graph = import_graph()
    assert set(graph) <= set(RANK), f"place these modules in a layer: {set(graph) - set(RANK)}"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"
    upward = [f"{m} imports {d}" for m, deps in graph.items() for d in deps if RANK[d] > RANK[m]]
    assert not upward, upward


def test_files_and_functions_stay_small():
    too_long = []
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "tests").rglob("*.py"), *(REPO / "bench").glob("*.py")]:
        text = path.read_text()
        if len(text.splitlines()) > 400:
            too_long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, too_long


def assert_runs_without_torch(code: str) -> None:
    """Runs `code` in a fresh interpreter: it must succeed and never import torch."""
    code += "\nimport sys; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_the_command_line_builds_its_parser_without_torch():
    assert_runs_without_torch("from fdrl.cli import parser; parser()")


def test_a_figure_of_stored_samples_is_drawn_without_torch(tmp_path):
    # Figure jobs are many and short: torch's import (about 2 s) would be most of each.
    import numpy as np

    from fdrl.chunks import write_chunk

    chunk = tmp_path / "chunk.npz"
    write_chunk(chunk, np.zeros((4, 8, 8, 1), np.uint8), np.arange(4), {})
    assert_runs_without_torch(
        "from fdrl.cli import main; "
        f"main(['figure', 'fig4', {str(chunk)!r}, '--out', {str(tmp_path / 'f.png')!r}])")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_tables_and_figures_of_results_are_made_without_torch(tmp_path):
    # Table 1 and Fig. 5 from FID results, as their workflow jobs make them.
    results = []
    for steps, fid in ((0, 150.0), (110, 6.5)):
        run = {"run": "r", "dataset": "digits", "prior": "data", "pairing": "lr-js", "steps": steps,
               "train_steps": 9, "flow_steps": 50, "config_hash": "h"}
        results.append(tmp_path / f"fid-{steps}.json")
        results[-1].write_text(json.dumps({"fid": fid, "backend": "classifier", "n_images": 20,
                                           "feature_extractor": "digits classifier", "run": run}))
    calls = [["table", "table1", *map(str, results), "--out", str(tmp_path / "t.csv")],
             ["figure", "fig5", *map(str, results), "--out", str(tmp_path / "f.png")]]
    # Every table and figure module of results, loaded, still without torch.
    assert_runs_without_torch(f"from fdrl.cli import main; [main(args) for args in {calls!r}]; "
                              "import fdrl.tables, fdrl.figures, fdrl.result_files")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(tmp_path / "t.csv")))[-2:]
    assert [(r["method"], r["loss"], r["divergence"], r["fid"]) for r in rows] == [
        ("prior samples, no flow", "LR", "JS", "150.00"), ("FDRL-DDP", "LR", "JS", "6.50")]


def test_names_agree_with_the_registries():
    from fdrl.divergences import DIVERGENCES
    from fdrl.features import WEIGHT_FILES
    from fdrl.figures import FIGURES
    from fdrl.tables import TABLES
    from fdrl.toy import EXPERIMENTS

    assert {f"{d.loss}-{d.name}" for d in DIVERGENCES.values()} == set(names.PAIRINGS)
    assert set(names.DIVERGENCE_TITLES) == set(DIVERGENCES)
    assert tuple(EXPERIMENTS) == names.TOYS
    assert {t for t, e in EXPERIMENTS.items() if e.figure != "fig10"} == set(names.GAUSSIAN_TOYS)
    assert tuple(FIGURES) == names.FIGURES and tuple(TABLES) == names.TABLES
    assert set(names.CODE_TABLES) < set(names.TABLES)
    assert {*WEIGHT_FILES, "classifier"} == set(names.FID_BACKENDS)


def test_the_workflow_schema_agrees_with_the_package():
    from fdrl.datasets import DATASETS

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]
    assert tuple(props["evaluation"]["properties"]["backends"]["items"]["enum"]) == names.FID_BACKENDS
    run = props["runs"]["additionalProperties"]["properties"]
    assert tuple(run["prior"]["enum"]) == names.PRIORS
    assert set(props["prior_datasets"]["items"]["enum"]) <= set(DATASETS)
