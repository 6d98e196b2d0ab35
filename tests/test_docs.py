"""Every command the docs show runs a module that exists, with flags it defines and values its
enums and numbers accept: a reader who copies a line gets the command, not an unknown flag."""
import ast
import functools
import glob
import os
import re
import shlex

import pytest

from cli import ROOT

PAGES = ["README.md", "CONTRIBUTING.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(f"{ROOT}/docs/*.md"))]
SCRIPTS = {"cxr-fast-" + name.replace("_", "-"): f"cxr_fast.{name}" for name in (
    "make_tfrecords", "make_synthetic", "train", "evaluate", "predict", "export", "launch_local", "data_service")}
ABSL = {"flagfile", "helpfull", "help", "helpshort", "helpxml", "verbosity", "v", "logtostderr", "alsologtostderr"}


def _blocks(text):
    """Shell lines of the page: fenced bash blocks (continuations joined) and `python -m ...` spans."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += [span.replace("\n", " ") for span in re.findall(r"`((?:python -m|cxr-fast-)[^`]+)`", text)]
    return lines


def commands(page):
    """(page, module, flags) for each project command on the page; flags after a bare `--` belong
    to the command launch_local starts (cxr_fast.train)."""
    found = []
    for line in _blocks(open(os.path.join(ROOT, page)).read()):
        line = line.split(" # ")[0].strip()
        for part in re.split(r"&&|;|\|", line):
            try:
                words = shlex.split(part)
            except ValueError:  # a quote left open by a prose span: not a command
                continue
            while words and re.match(r"^[A-Z_]+=", words[0]):
                words = words[1:]  # VAR=value prefixes
            module = None
            if words[:2] == ["python", "-m"] and len(words) > 2:
                module, words = words[2], words[3:]
            elif words and words[0] in SCRIPTS:
                module, words = SCRIPTS[words[0]], words[1:]
            if module is None or not module.startswith(("cxr_fast", "tools.", "benchmarks.")):
                continue
            own, passed = (words[:words.index("--")], words[words.index("--") + 1:]) if "--" in words else (words, [])
            found.append((page, module, [w for w in own if w.startswith("--")]))
            if passed:
                found.append((page, "cxr_fast.train", [w for w in passed if w.startswith("--")]))
    return found


_KINDS = {"integer": "int", "float": "float", "bool": "bool", "boolean": "bool", "enum": "string enum"}


@functools.lru_cache(maxsize=None)
def defined_flags(module):
    """{name: (type, enum values)} of the flags the command's source defines (read with `ast`, so no
    command is started: a benchmark's `--helpxml` alone imports TensorFlow).  `tools.X` is a shim
    of `cxr_fast.X`; enum choices written as expressions are evaluated against cxr_fast.config."""
    from cxr_fast import config

    name = "cxr_fast." + module.removeprefix("tools.") if module.startswith("tools.") else module
    path = os.path.join(ROOT, *name.split(".")) + ".py"
    assert os.path.isfile(path), f"python -m {module}: no such module in the repository"
    found = {}
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr.startswith("DEFINE_") and node.args and isinstance(node.args[0], ast.Constant)):
            kind = _KINDS.get(node.func.attr.removeprefix("DEFINE_"), "string")
            choices = []
            if kind == "string enum" and len(node.args) > 2:
                try:
                    choices = list(eval(compile(ast.Expression(node.args[2]), path, "eval"),
                                        {"config_lib": config, "list": list}))
                except NameError:  # choices from a name this test does not know: only the flag's name is checked
                    kind = "string"
            found[node.args[0].value] = (kind, choices)
    return found


def _problem(flag, defined):
    name, _, value = flag[2:].partition("=")
    if name in ABSL:
        return None
    if name not in defined and name.startswith("no") and defined.get(name[2:], ("",))[0] == "bool":
        return None  # --noresume
    if name not in defined:
        return f"{flag}: no such flag"
    kind, choices = defined[name]
    if not value or re.fullmatch(r"[A-Z][A-Z_]{2,}", value) or "<" in value or "..." in value:
        return None  # a placeholder the reader fills in
    if choices and kind == "string enum" and value not in choices:
        return f"{flag}: not one of {choices}"
    try:
        {"int": int, "float": float}.get(kind, str)(value)
    except ValueError:
        return f"{flag}: not a {kind}"
    return None


SHOWN = [c for page in PAGES for c in commands(page)]


def test_the_docs_show_commands():
    modules = {module for _, module, _ in SHOWN}
    assert {"tools.make_tfrecords", "cxr_fast.train", "cxr_fast.evaluate", "cxr_fast.predict", "cxr_fast.export",
            "tools.launch_local", "tools.data_service", "benchmarks.run_all"} <= modules, modules


@pytest.mark.parametrize("module", sorted({module for _, module, _ in SHOWN}))
def test_every_flag_shown_is_one_the_command_defines(module):
    problems = [f"{page}: python -m {module} {problem}" for page, shown, flags in SHOWN if shown == module
                for problem in map(lambda f: _problem(f, defined_flags(module)), flags) if problem]
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_wrong_flag():
    defined = {"split": ("string enum", ["patient", "image"]), "epochs": ("int", []), "resume": ("bool", [])}
    assert _problem("--splti=patient", defined) == "--splti=patient: no such flag"
    assert _problem("--split=patients", defined).startswith("--split=patients: not one of")
    assert _problem("--epochs=3.5", defined) == "--epochs=3.5: not a int"
    assert _problem("--noresume", defined) is None and _problem("--split=SPLIT", defined) is None


def test_the_data_sets_page_lists_the_vocabulary_and_every_mapping_that_is_not_exact():
    from cxr_fast.tasks import vocabulary

    page = open(os.path.join(ROOT, "docs", "data-sets.md"), encoding="utf-8").read()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in page.splitlines() if line.startswith("| ") and line.count("|") == 6}
    for name, sets in vocabulary.ALIGNED.items():
        assert rows.get(name) == [sets.get("nih", ""), sets.get("chexpert", ""), sets.get("rsna", ""),
                                  sets.get("kermany", "")], name
    for (source, name), why in vocabulary.APPROXIMATE.items():
        assert why in page, (source, name)
    for one, other, why in vocabulary.KEPT_APART:
        assert f"- {one} and {other}: {why}." in page
