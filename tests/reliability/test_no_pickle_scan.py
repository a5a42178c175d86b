"""No pickle is ever loaded (issue 22): a scan of src/ with ``ast`` (not text search alone) for what
would unpickle a file: ``torch.load`` without ``weights_only=True``, ``pickle``/``dill``/``cloudpickle``
``load(s)``, an ``Unpickler`` that does not restrict ``find_class``, ``joblib`` (imported or declared),
``numpy.load(allow_pickle=True)``, ``pandas.read_pickle``, ``shelve``, ``marshal.load(s)``, model
``from_pretrained`` calls that do not name ``use_safetensors`` (transformers falls back to
``pytorch_model.bin``), ``PeftModel.from_pretrained`` without :func:`require_safetensors` first, and
torch.distributed.checkpoint loads with DCP's default reader and planner (which unpickle freely).

The checker is run on a sample of each mistake first, so a scan that finds nothing is not vacuous.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "oikyo"
PICKLERS = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle"}
BANNED_MODULES = {"joblib", "shelve", "dill", "cloudpickle"}


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain ('' otherwise)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def problems(source: str, filename: str = "<sample>") -> list[str]:
    """Every way ``source`` could unpickle data, as "file:line: what"."""
    tree = ast.parse(source, filename)
    found = []
    aliases: dict[str, str] = {}  # local name -> "module" or "module.attr" it was imported as

    def report(node, what):
        found.append(f"{filename}:{node.lineno}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name.split(".")[0]] = alias.name
                if alias.name.split(".")[0] in BANNED_MODULES:
                    report(node, f"imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            if node.module.split(".")[0] in BANNED_MODULES:
                report(node, f"imports from {node.module}")
            if node.module in PICKLERS and any(a.name in ("load", "loads", "Unpickler") for a in node.names):
                report(node, f"imports load/Unpickler from {node.module}")
            if node.module == "torch" and any(a.name == "load" for a in node.names):
                report(node, "imports torch.load by name (the scan could not check its weights_only)")
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                name = _dotted(base)
                head = aliases.get(name.split(".")[0], name.split(".")[0])
                if name.endswith("Unpickler") and (head.split(".")[0] in PICKLERS):
                    overrides = any(isinstance(item, ast.FunctionDef) and item.name == "find_class" for item in node.body)
                    if not overrides:
                        report(node, f"class {node.name} unpickles without restricting find_class")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if not name:
            continue
        first, _, rest = name.partition(".")
        full = (aliases.get(first, first) + ("." + rest if rest else ""))
        module, _, function = full.rpartition(".")
        if full == "torch.load" and not _is_true(_keyword(node, "weights_only")):
            report(node, "torch.load without weights_only=True")
        elif module.split(".")[0] in PICKLERS and function in ("load", "loads", "Unpickler"):
            report(node, f"{full}")
        elif module.split(".")[0] in ("numpy", "np") and function == "load" and _is_true(_keyword(node, "allow_pickle")):
            report(node, "numpy.load(allow_pickle=True)")
        elif full in ("pandas.read_pickle", "pd.read_pickle") or (function == "read_pickle"):
            report(node, "read_pickle")
        elif module == "marshal" and function in ("load", "loads"):
            report(node, f"{full}")
        elif full == "torch.distributed.checkpoint.load" and (_keyword(node, "storage_reader") is None
                                                              or _keyword(node, "planner") is None):
            report(node, "DCP load without a storage_reader and planner (its defaults unpickle freely)")
        elif function == "from_pretrained" and re.search(r"(ForCausalLM|AutoModel|ForSequenceClassification)", module):
            if _keyword(node, "use_safetensors") is None and _keyword(node, "gguf_file") is None:
                report(node, f"{full} without use_safetensors (falls back to pickled .bin weights)")
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        calls = [n for n in ast.walk(function) if isinstance(n, ast.Call)]
        names = {_dotted(n.func).split(".")[-1] for n in calls}
        for call in calls:
            if _dotted(call.func) == "PeftModel.from_pretrained" and "require_safetensors" not in names:
                report(call, "PeftModel.from_pretrained without require_safetensors (peft falls back to adapter_model.bin)")
    return found


BAD_SAMPLE = '''
import pickle, joblib, torch, numpy as np
import dill
import torch.distributed.checkpoint as dcp
from pickle import loads
from torch import load
import pickle as p2
from transformers import AutoModelForCausalLM
from peft import PeftModel

class Loose(pickle.Unpickler):
    pass

def f(path, model):
    torch.load(path)
    torch.load(path, weights_only=False)
    pickle.load(open(path, "rb"))
    p2.loads(b"")
    np.load(path, allow_pickle=True)
    AutoModelForCausalLM.from_pretrained(path)
    PeftModel.from_pretrained(model, path)
    dcp.load({}, checkpoint_id=path)
'''

GOOD_SAMPLE = '''
import pickle, torch, numpy as np
from transformers import AutoModelForCausalLM
from peft import PeftModel
from oikyo.models.loading import require_safetensors

class Strict(pickle.Unpickler):
    def find_class(self, module, name):
        raise pickle.UnpicklingError(name)

def f(path, model):
    torch.load(path, weights_only=True)
    np.load(path, allow_pickle=False)
    pickle.dumps({"a": 1})
    AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    require_safetensors(path, "adapter")
    PeftModel.from_pretrained(model, path)
'''


def test_the_scan_finds_each_kind_of_mistake():
    found = problems(BAD_SAMPLE)
    expected = ["imports joblib", "imports dill", "imports load/Unpickler from pickle", "imports torch.load by name",
                "class Loose", "torch.load without weights_only=True", "pickle.load", "pickle.loads",
                "numpy.load(allow_pickle=True)", "AutoModelForCausalLM.from_pretrained without use_safetensors",
                "PeftModel.from_pretrained without require_safetensors", "DCP load without"]
    for what in expected:
        assert any(what in line for line in found), (what, found)
    assert sum("torch.load without" in line for line in found) == 2
    assert problems(GOOD_SAMPLE) == []


def test_no_module_in_src_can_unpickle_a_file():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 100
    found = [line for path in files for line in problems(path.read_text(), str(path.relative_to(ROOT)))]
    print(f"scanned {len(files)} modules under src/oikyo with ast")
    assert not found, "ways to unpickle data in src/:\n" + "\n".join(found)


def test_joblib_and_other_picklers_are_not_declared():
    declared = (ROOT / "pyproject.toml").read_text().lower()
    for name in ("joblib", "dill", "cloudpickle"):
        assert not re.search(rf'["\']{name}\b', declared), f"pyproject.toml declares {name}"
