"""The package as users install and import it: hybridlt.* only, light rooms, a foreign working folder."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("model", "data", "sweep", "dashboards")


def _python(code: str, cwd: Path, isolated: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *(["-I"] if isolated else []), "-c", code], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_installed_names_are_hybridlt_only(tmp_path):
    for room in ROOMS:
        done = _python(f"import {room}", tmp_path)
        assert done.returncode != 0 and f"No module named '{room}'" in done.stderr, room
    done = _python("import hybridlt, hybridlt.model.losses, hybridlt.data.samplers, hybridlt.sweep.store, "
                   "hybridlt.dashboards.queries; print(hybridlt.__version__, hybridlt.model.losses.__file__)", tmp_path)
    assert done.returncode == 0, done.stderr
    version, where = done.stdout.split()
    assert version[0].isdigit() and Path(where) == ROOT / "model" / "losses.py"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_bare_imports_of_the_rooms_anywhere():
    files = [p for d in ("hybridlt", *ROOMS, "tests", "bench") for p in (ROOT / d).rglob("*.py")]
    bare = [(str(p.relative_to(ROOT)), name) for p in files for name in _imports(p)
            if name.split(".")[0] in ROOMS]
    assert len(files) > 60 and bare == []


def test_model_and_data_need_only_the_torch_side(tmp_path):
    """As on a bare GPU machine: no pydantic, Ray, pyarrow, Dash or YAML; a source tree, not installed."""
    code = f"""
import sys, importlib, pkgutil
sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]
sys.path_hooks[:] = [h for h in sys.path_hooks if 'editable' not in repr(h).lower()]
sys.path.insert(0, {str(ROOT)!r})
for banned in ('pydantic', 'ray', 'pyarrow', 'dash', 'plotly', 'yaml', 'pandas', 'optuna'):
    sys.modules[banned] = None
import hybridlt.model, hybridlt.data
for pkg in (hybridlt.model, hybridlt.data):
    for info in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(pkg.__name__ + '.' + info.name)
from hybridlt.data.dataset import DATASETS
print(hybridlt.model.__file__, len(DATASETS))
"""
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    where, datasets = done.stdout.split()
    assert Path(where) == ROOT / "model" / "__init__.py" and int(datasets) >= 5


def test_the_dashboard_never_imports_torch(tmp_path):
    done = _python("import sys, hybridlt.dashboards.app, hybridlt.dashboards.queries\n"
                   "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"



def test_torchvision_is_imported_only_where_images_are_read(tmp_path):
    """Its import pulls in torch._dynamo (~1.5 s a process): not in the CLI, a sweep's trial code or a
    run on the embedded data; a dataset that decodes images still gets it."""
    done = _python("import sys, hybridlt.cli, hybridlt.sweep.trial, hybridlt.sweep.run\n"
                   "before = 'torchvision' in sys.modules\n"
                   "from hybridlt.data.image_list import eval_transform\n"
                   "eval_transform(32)\n"
                   "print(before, 'torchvision' in sys.modules)", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_a_sweep_without_trackers_does_not_import_mlflow(tmp_path):
    """Ray's MLflow integration imports mlflow (0.75 s): only a spec with tracking.mlflow loads it."""
    done = _python("import sys, hybridlt.cli, hybridlt.sweep.tuner, hybridlt.sweep.tracking\n"
                   "from hybridlt.sweep.spec import load_sweep_spec\n"
                   f"quick = {str(ROOT / 'configs' / 'sweeps' / 'quickstart.yaml')!r}\n"
                   "spec = load_sweep_spec(quick)[0]\n"
                   "assert hybridlt.sweep.tracking.tracker_callbacks(spec, None) == []\n"
                   "before = 'mlflow' in sys.modules\n"
                   "spec = load_sweep_spec(quick, ['tracking.mlflow=file:///x'])[0]\n"
                   "kinds = [type(c).__name__ for c in hybridlt.sweep.tracking.tracker_callbacks(spec, None)]\n"
                   "print(before, 'mlflow' in sys.modules, kinds)", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "['MLflowCallback']"]

@pytest.fixture
def foreign_folder(tmp_path):
    """A working folder full of the user's own code named like our rooms, each failing loudly if imported."""
    for room in (*ROOMS, "hybridlt_config"):
        (tmp_path / f"{room}.py").write_text(f"raise ImportError('the user\\'s own {room}.py was imported')\n")
    return tmp_path


def test_train_from_a_folder_holding_model_py_and_data_py(foreign_folder):
    sets = ["--set", "train.epochs=3", "--set", "data.max_count=40", "--set", "model.backbone=resnet8",
            "--set", "train.batch_size=64", "--set", "train.device=cpu"]
    done = subprocess.run([str(Path(sys.executable).parent / "hybridlt"), "train", "--config",
                           str(ROOT / "configs" / "quickstart.yaml"), *sets, "--out", "run", "--quiet"],
                          cwd=foreign_folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "user's own" not in done.stderr and (foreign_folder / "run" / "epochs").is_dir()
