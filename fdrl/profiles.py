"""`fdrl profiles install`: link the project's Snakemake profiles where Snakemake looks for
profiles by name, so that `--profile slurm` works as Snakemake's own documentation writes it."""

from __future__ import annotations

import os
from pathlib import Path

from fdrl.errors import FdrlError

PROFILES = Path(__file__).resolve().parents[1] / "cluster_profiles"


def user_profile_dir() -> Path:
    """Snakemake's per-user profile folder: $XDG_CONFIG_HOME/snakemake or ~/.config/snakemake."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "snakemake"


def install(to: Path | None = None, source: Path = PROFILES) -> list[Path]:
    """Symlinks each profile folder of `source` into `to`; refuses to replace anything else."""
    to = to or user_profile_dir()
    if not source.is_dir():
        raise FdrlError(f"no profiles at {source}: run this from a clone of the fdrl repository")
    profiles = sorted(p for p in source.iterdir() if (p / "config.yaml").is_file())
    for p in profiles:
        link = to / p.name
        if (link.exists() or link.is_symlink()) and link.resolve() != p.resolve():
            raise FdrlError(
                f"{link} exists and is not this project's {p.name} profile; move it away or use "
                f"--profile {p} instead"
            )
    to.mkdir(parents=True, exist_ok=True)
    links = []
    for p in profiles:
        link = to / p.name
        if not link.is_symlink():
            link.symlink_to(p, target_is_directory=True)
        links.append(link)
    return links
