"""pyproject.toml lists every package folder: setuptools installs only the packages listed (the
list is explicit because client/ and compaction/ install under stateserver), so a folder missing
from it works in the editable checkout and is absent from a built wheel."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setuptools_config() -> dict[str, object]:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)["tool"]["setuptools"]


def package_folders(package_dir: dict[str, str]) -> dict[str, Path]:
    """Import name -> folder of every folder with an ``__init__.py`` under the installed roots."""
    roots = {"stateserver": ROOT / "stateserver", **{name: ROOT / folder for name, folder in package_dir.items()}}
    found = {}
    for root_name, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            found[".".join([root_name, *parts])] = init.parent
    return found


def unlisted(listed: list[str], folders: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(folders not in the list, listed names without a folder)."""
    return set(folders) - set(listed), set(listed) - set(folders)


def test_every_package_folder_is_listed_and_every_listed_package_exists() -> None:
    config = setuptools_config()
    folders = package_folders(config["package-dir"])  # type: ignore[arg-type]
    missing, absent = unlisted(config["packages"], folders)  # type: ignore[arg-type]
    assert missing == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert absent == set(), "pyproject.toml lists packages that have no folder"


def test_client_and_compaction_install_under_stateserver() -> None:
    assert setuptools_config()["package-dir"] == {"stateserver.client": "client",
                                                  "stateserver.compaction": "compaction"}


def test_a_new_folder_missing_from_the_list_is_caught() -> None:
    folders = package_folders({"stateserver.client": "client"})
    assert "stateserver.client.aio" in folders and "stateserver.protocol.v1" in folders
    listed = sorted(set(folders) - {"stateserver.protocol.v1"}) + ["stateserver.gone"]
    assert unlisted(listed, folders) == ({"stateserver.protocol.v1"}, {"stateserver.gone"})
