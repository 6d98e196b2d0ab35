"""The package's import rules: stages import downward only, no cycles, no private modules of other libraries.

Read from the source with `ast` (imports inside functions included), so the test needs no
TensorFlow and fails on the first import that points the wrong way.
"""
import ast
import os

from cli import ROOT

# Lowest first; a module may import its own stage and the ones before it (see cxr_fast/__init__.py).
STAGES = [
    ("cxr_fast", "cxr_fast.config", "cxr_fast.errors", "cxr_fast.atomic", "cxr_fast.workers"),
    ("cxr_fast.tasks",),
    ("cxr_fast.data",),
    ("cxr_fast.distributed",),
    ("cxr_fast.serving",),
    ("cxr_fast.evaluation",),
    ("cxr_fast.training",),
    ("cxr_fast.train", "cxr_fast.evaluate", "cxr_fast.predict", "cxr_fast.export", "cxr_fast.make_tfrecords",
     "cxr_fast.make_synthetic", "cxr_fast.launch_local", "cxr_fast.data_service"),
    ("tools", "benchmarks"),
]


def stage(module):
    """The index in STAGES of the longest prefix naming `module`."""
    best = None
    for rank, prefixes in enumerate(STAGES):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    return best[0]


def project_modules():
    modules = {}
    for top in ("cxr_fast", "tools", "benchmarks"):
        for root, _, names in os.walk(os.path.join(ROOT, top)):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    modules[dotted.removesuffix(".__init__")] = path
    return modules


def imports_of(path, known):
    """(imported module, line) pairs: `from a.b import c` counts as a.b.c when that is a module."""
    found = []
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full if full in known else node.module, node.lineno))
    return found


def test_stages_import_downward_only():
    modules = project_modules()
    wrong = []
    for module, path in modules.items():
        for imported, line in imports_of(path, modules):
            if imported in modules and stage(imported) > stage(module):
                wrong.append(f"{module}:{line} imports {imported}")
    assert not wrong, "imports pointing up the stages:\n" + "\n".join(wrong)


def test_no_import_cycles():
    modules = project_modules()
    graph = {m: {i for i, _ in imports_of(p, modules) if i in modules and i != m} for m, p in modules.items()}
    # a package's __init__ is imported with each of its modules, but imports none of them here
    state, cycle = {}, []

    def visit(module, trail):
        state[module] = "open"
        for nxt in sorted(graph[module]):
            if state.get(nxt) == "open":
                cycle.append(trail[trail.index(nxt):] + [nxt] if nxt in trail else [module, nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycle, f"import cycles: {cycle}"


def test_no_private_modules_of_other_libraries():
    modules = project_modules()
    private = []
    for module, path in modules.items():
        for imported, line in imports_of(path, modules):
            if not imported.startswith(("cxr_fast", "tools", "benchmarks")) and \
                    any(part.startswith("_") or part == "src" for part in imported.split(".")[1:]):
                private.append(f"{module}:{line} imports {imported}")
    assert not private, "\n".join(private)


def test_the_rules_catch_an_upward_import():
    # the checker itself: a data module importing the training loop is caught
    assert stage("cxr_fast.data.pipeline") < stage("cxr_fast.training.loop")
    assert stage("cxr_fast.config") < stage("cxr_fast.tasks.task") < stage("cxr_fast.data.writer")
    assert stage("cxr_fast.config") == 0 and stage("cxr_fast.train") > stage("cxr_fast.training.loop")


def test_nothing_refers_outside_the_repository():
    outside = []
    for root, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not d.endswith(".egg-info") and d != "__pycache__"]
        for name in names:
            if name.endswith((".py", ".md", ".flags", ".sh", ".cfg", ".txt")):
                path = os.path.join(root, name)
                if "../" + "shared" in open(path, errors="replace").read():
                    outside.append(os.path.relpath(path, ROOT))
    assert not outside, outside


# Where a test on finding names is not a binary / multi-label branch: the record layout writes and
# parses the FINDINGS feature only when asked to, a label-file reader says whether its rows label
# findings (the fact `tasks.create` decides from), dedupe compares whole labels, NIH's parser reads names.
NOT_TASK_BRANCHES = {("cxr_fast.data.schema", "findings"), ("cxr_fast.data.schema", "num_findings"),
                     ("cxr_fast.data.labelfiles", "images and images[0].findings"),
                     ("cxr_fast.data.labelfiles", "images[0].findings"),
                     ("cxr_fast.data.labelfiles", "f in findings"),
                     ("cxr_fast.data.index", "len({(im.label, im.findings) for im in copies}) > 1")}
TASK_WORDS = {"findings", "multilabel", "num_findings", "finding_names", "classes"}


def task_branches(modules):
    """(module, condition) of every if / while / conditional expression / comprehension filter / and-or
    whose condition reads finding or class names or a multi-label flag."""
    found = set()
    for module, path in modules.items():
        for node in ast.walk(ast.parse(open(path).read(), path)):
            tests = [node.test] if isinstance(node, (ast.If, ast.IfExp, ast.While)) else []
            tests += node.ifs if isinstance(node, ast.comprehension) else []
            tests += node.values if isinstance(node, ast.BoolOp) else []
            for test in tests:
                names = {n.id for n in ast.walk(test) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(test) if isinstance(n, ast.Attribute)}
                if names & TASK_WORDS:
                    found.add((module, ast.unparse(test)))
    return found


def test_only_the_task_tells_binary_from_multi_label():
    modules = {m: p for m, p in project_modules().items()
               if m.startswith("cxr_fast.") and not m.startswith("cxr_fast.tasks")}
    branches = sorted(task_branches(modules) - NOT_TASK_BRANCHES)
    assert not branches, ("branches on the task outside cxr_fast/tasks (ask the task instead):\n"
                          + "\n".join(f"{m}: {test}" for m, test in branches))


def test_the_task_rule_catches_a_branch(tmp_path):
    path = tmp_path / "stage.py"
    path.write_text("def rows(record_set, probs):\n    return probs if record_set.findings else probs.ravel()\n")
    assert task_branches({"cxr_fast.serving.stage": str(path)}) == {
        ("cxr_fast.serving.stage", "record_set.findings")}
