"""[tool.pmemkit.vm], its options and the guest layer's key: no guest boots here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pmemkit import defaults
from pmemkit.errors import GuestLayerError, VmConfigError
from pmemkit.vm import cache, guest, runner
from pmemkit.vm.config import VmConfig
from pmemkit.vm.project import Project, check_python, load_project

FIXTURE = Path(__file__).with_name("project_fixture")


def _project(tmp_path, text):
    (tmp_path / "pyproject.toml").write_text(text)
    return tmp_path


def test_no_pyproject_and_no_options_is_pmemkit_only(tmp_path):
    project = load_project(tmp_path, tmp_path)
    assert project == Project()
    assert runner.project_layer(VmConfig(share=tmp_path), project).inputs() == {}


def test_fixture_project_is_read():
    project = load_project(FIXTURE / "native", FIXTURE)
    assert project.directory == FIXTURE.resolve()
    assert project.packages == ("gcc", "make", "libpmemobj-dev", "pmdk-tools")
    assert project.pip == ("-e .",) and project.local_pip
    assert project.requires_python == ">=3.9"


def test_options_replace_the_pyproject_values(tmp_path):
    _project(tmp_path, '[tool.pmemkit.vm]\npackages = ["gcc"]\npip = ["attrs"]\nsetup = ["true"]\n')
    project = load_project(tmp_path, tmp_path, packages=["make,cmake", "libpmem-dev"],
                           setup=["make -C native", "echo hi"])
    assert project.packages == ("make", "cmake", "libpmem-dev")
    assert project.pip == ("attrs",)
    assert project.setup == ("make -C native", "echo hi")
    assert project.pip_argv == ["attrs"]


def test_typo_key_is_named_with_a_suggestion(tmp_path):
    _project(tmp_path, '[tool.pmemkit.vm]\npackage = ["gcc"]\n')
    with pytest.raises(VmConfigError, match=r"unknown key 'package'.*did you mean 'packages'"):
        load_project(tmp_path, tmp_path)


@pytest.mark.parametrize("text, match", [
    ('[tool.pmemkit.vm]\npackages = "gcc make"\n', "not a Debian package name"),
    ('[tool.pmemkit.vm]\npip = [1]\n', "pip must be a list of strings"),
    ('[tool.pmemkit.vm\n', "cannot read"),
])
def test_bad_values_are_clear_errors(tmp_path, text, match):
    _project(tmp_path, text)
    with pytest.raises(VmConfigError, match=match):
        load_project(tmp_path, tmp_path)


def test_project_outside_the_share_is_refused(tmp_path):
    project_dir = tmp_path / "project"
    share = tmp_path / "elsewhere"
    share.mkdir()
    _project(project_dir.mkdir() or project_dir, '[tool.pmemkit.vm]\npip = ["attrs"]\n')
    with pytest.raises(VmConfigError, match="is not under the shared directory"):
        load_project(project_dir, share)
    with pytest.raises(VmConfigError, match="no directory is shared"):
        load_project(project_dir, None)


def test_nearest_pyproject_stops_at_the_share(tmp_path):
    _project(tmp_path, '[tool.pmemkit.vm]\npackages = ["gcc"]\n')
    share = tmp_path / "share"
    (share / "sub").mkdir(parents=True)
    assert load_project(share / "sub", share).packages == ()
    assert load_project(share / "sub", tmp_path).packages == ("gcc",)


def test_requires_python_is_checked():
    check_python(Project(requires_python=">=3.9"), "3.11")
    check_python(Project(requires_python="~=3.11.4"), "3.11")
    with pytest.raises(VmConfigError, match=r"guest's Python is 3.11.*'>=3.12'"):
        check_python(Project(directory=Path("/p"), requires_python=">=3.12"), "3.11")


def test_layer_key_changes_with_its_inputs_only():
    def key(layer):
        inputs = guest.rootfs_inputs(packages=defaults.VM_PACKAGES + layer.all_packages())
        inputs.update(layer.inputs())
        return cache.key(inputs)

    base = key(guest.Layer())
    assert base == cache.key(guest.rootfs_inputs())           # an empty layer is the base image
    one = guest.Layer(packages=("make", "gcc"), pip=("attrs",))
    assert key(one) == key(guest.Layer(packages=("gcc", "make"), pip=("attrs",)))
    assert key(one) != key(guest.Layer(packages=("gcc", "make"), pip=("attrs==23.1",)))
    assert "libc6-dev" in one.all_packages() and "python3-pip" in one.all_packages()


def test_local_requirement_keys_the_layer_by_the_build_files(tmp_path):
    _project(tmp_path, '[project]\nname = "x"\n[tool.pmemkit.vm]\npip = ["-e .[test]"]\n')
    project = load_project(tmp_path, tmp_path)
    layer = runner.project_layer(VmConfig(share=tmp_path), project)
    assert layer.guest_project == str(tmp_path.resolve())
    before = layer.inputs()
    (tmp_path / "module.py").write_text("x = 1\n")             # source: no rebuild
    assert runner.project_layer(VmConfig(share=tmp_path), project).inputs() == before
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["attrs"]\n'
                                             '[tool.pmemkit.vm]\npip = ["-e .[test]"]\n')
    assert runner.project_layer(VmConfig(share=tmp_path), project).inputs() != before


def test_native_extension_is_rebuilt_for_another_python_or_refused(tmp_path, monkeypatch):
    package = tmp_path / "pmemkit"
    package.mkdir()
    monkeypatch.setattr(runner, "_pmemkit_package", lambda: package)
    config = VmConfig(share=tmp_path)
    (package / "_flush.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    assert runner.project_layer(config, None, "3.11").native_source is None
    with pytest.raises(GuestLayerError, match="would fall back to msync"):
        runner.project_layer(config, None, "3.12")
    (package / "_flush.c").write_text("/* source */\n")
    layer = runner.project_layer(config, None, "3.12")
    assert layer.native_source == package / "_flush.c"
    assert {"gcc", "python3-dev"} <= set(layer.all_packages())


def test_wheel_and_sdist_carry_the_extension_source():
    import tomllib
    data = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "_flush.c" in data["tool"]["setuptools"]["package-data"]["pmemkit"]


def test_cli_options_reach_the_project(tmp_path):
    _project(tmp_path, '[tool.pmemkit.vm]\npakages = ["gcc"]\n')
    proc = subprocess.run([sys.executable, "-m", "pmemkit", "vm", "run", "--packages", "gcc,make",
                           "--", "true"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "unknown key 'pakages'" in proc.stderr and "Traceback" not in proc.stderr
