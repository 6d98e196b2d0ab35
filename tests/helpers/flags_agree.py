"""`python tests/helpers/flags_agree.py MODULE REQUIRED_FLAG ...`: prints JSON of where the
command's flags and its config disagree: a default that is not the config's, or a flag whose
change does not reach the config (one process per command: each defines its own flags)."""
import dataclasses
import importlib
import json
import sys

from absl import flags

from cxr_fast import config as config_lib


def _changed(flag):
    """A value other than the flag's default (enums: another choice; validation is off here)."""
    if isinstance(flag, flags.EnumFlag) or getattr(flag.parser, "enum_values", None):
        return next(v for v in flag.parser.enum_values if v != flag.default)
    default = flag.default
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 1
    if isinstance(default, float):
        return default / 2 if default else 0.5
    if isinstance(default, list):
        return {"split_fractions": ["0.5", "0.25", "0.25"], "head_dropout": ["0.5", "0.1"],
                "size_range": ["800", "1000"], "view": ["PA"], "label_columns": ["a"], "findings": ["Edema"]}[flag.name]
    return "changed"


def _flat(config):
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def _declared(cls, prefix=""):
    """{dotted field: default} of a config dataclass, nested configs included; required fields left out."""
    found = {}
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(field.type):
            found.update(_declared(field.type, f"{prefix}{field.name}."))
        elif field.default is not dataclasses.MISSING:  # through JSON, as `_flat` gives the built config
            found[prefix + field.name] = json.loads(json.dumps(field.default, default=str))
    return found


def _dotted(flat, prefix=""):
    out = {}
    for key, value in flat.items():
        if isinstance(value, dict):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def main(module_name, *required):
    for cls in vars(config_lib).values():  # the mapping is checked here, not the validation rules
        if dataclasses.is_dataclass(cls) and hasattr(cls, "validate"):
            cls.validate = lambda self: self
    module = importlib.import_module(module_name)
    FLAGS = flags.FLAGS
    FLAGS([module_name, *required])
    given = {r.split("=")[0][2:] for r in required}
    config = module.config_from_flags()
    built, declared = _dotted(_flat(config)), _declared(type(config))
    problems = [f"{name}: the flags give {built[name]!r}, the config declares {default!r}"
                for name, default in declared.items()
                if name in built and built[name] != default and name.split(".")[-1] not in given]
    for flag in FLAGS.get_key_flags_for_module(module):
        if flag.name in given:
            continue
        FLAGS[flag.name].value = _changed(flag)
        if _dotted(_flat(module.config_from_flags())) == built:
            problems.append(f"--{flag.name} does not reach the config")
        FLAGS[flag.name].value = flag.default
    print(json.dumps(problems))


if __name__ == "__main__":
    main(*sys.argv[1:])
