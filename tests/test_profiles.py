"""`fdrl profiles install`: the project's Snakemake profiles linked where Snakemake looks."""

import pytest

from fdrl.errors import FdrlError
from fdrl.profiles import install


def test_profiles_install_links_and_refuses_to_clobber(tmp_path):
    links = install(tmp_path / "profiles")
    assert sorted(link.name for link in links) == ["local", "slurm"]
    assert (tmp_path / "profiles" / "slurm" / "config.yaml").is_file()
    assert install(tmp_path / "profiles") == links  # idempotent
    (tmp_path / "other" / "slurm").mkdir(parents=True)
    with pytest.raises(FdrlError, match="is not this project's slurm profile"):
        install(tmp_path / "other")


def test_the_command_prints_each_link(tmp_path, capsys):
    from fdrl.cli import main

    assert main(["profiles", "install", "--to", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'local'} -> " in out and f"{tmp_path / 'slurm'} -> " in out
