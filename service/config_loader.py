"""Loading the daemon's configuration: defaults, then a file, then environment variables, then flags.

The typed sections are :mod:`service.config`; this module turns nested dicts (a YAML, JSON or TOML
file, ``MCIL_SECTION__FIELD`` variables, ``--set section.field=value``) into a validated
:class:`~service.config.ServiceConfig`, refusing unknown keys and bad values with a
:class:`~service.errors.ConfigError` that names the field.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from service.config import ServiceConfig
from service.errors import ConfigError

_BOOL_WORDS = ("true", "yes", "1", "on", "false", "no", "0", "off")


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` (from a file or a flag) as the type ``hint``, or a ConfigError naming ``name``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "")):
            return None
        if args == [bool]:  # an optional switch: None is "decide for me" (server.light)
            if isinstance(value, str) and value.lower() == "auto":
                return None
            if not isinstance(value, bool) and str(value).lower() not in _BOOL_WORDS:
                raise ConfigError(name, f"must be true, false or auto (null), got {value!r}")
        return _coerce(name, args[0], value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOL_WORDS:
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(name, f"must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(name, f"must be an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(name, f"must be an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(name, f"must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(name, f"must be a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(name, f"must be a string, got {value!r}")
        return str(value)
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(name, f"must be a path, got {value!r}")
        return Path(value).expanduser()
    raise ConfigError(name, f"unsupported type {hint!r}")  # pragma: no cover


def _section(cls: type[Any], name: str, data: Any) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(name, f"must be a mapping of fields, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}", f"unknown field (known: {', '.join(sorted(known))})")
    kwargs = {key: _coerce(f"{name}.{key}", hints[key], value) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # pragma: no cover - dataclass construction problems
        raise ConfigError(name, str(exc)) from None


def config_from_dict(data: Mapping[str, Any]) -> ServiceConfig:
    """Build and validate a :class:`ServiceConfig` from nested dicts (sections as in the file)."""
    if not isinstance(data, Mapping):
        raise ConfigError("(root)", "the configuration must be a mapping of sections")
    hints = typing.get_type_hints(ServiceConfig)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(unknown[0], f"unknown section (known: {', '.join(sorted(hints))})")
    return ServiceConfig(**{key: _section(hints[key], key, value) for key, value in data.items()})


def read_config_file(path: Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml), JSON (.json) or TOML (.toml) file -> nested dicts."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {str(path)!r}: {exc.strerror}") from None
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError("--config", f"unknown file type {suffix!r}: use .yaml, .yml, .json or .toml")
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser error becomes a clear start-up error
        raise ConfigError("--config", f"cannot parse {str(path)!r}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{str(path)!r} must contain a mapping of sections")
    return data


def merge_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``{"section.field": value}`` overrides to nested dicts (returns a new dict)."""
    merged: dict[str, Any] = {key: dict(value) if isinstance(value, Mapping) else value for key, value in data.items()}
    for dotted, value in overrides.items():
        section, sep, key = dotted.partition(".")
        if not sep or not key:
            raise ConfigError(dotted, "overrides are written section.field=value")
        target = merged.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(section, "must be a mapping of fields")
        target[key] = value
    return merged


ENV_PREFIX = "MCIL_"


def environment_overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """``MCIL_<SECTION>__<FIELD>=value`` variables as ``{"section.field": value}`` (for containers and
    systemd units). Variables without the double underscore (``MCIL_TARGET``, ``MCIL_TOKEN``: the
    client's) are not configuration and are left alone."""
    out = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].partition("__")
        if not section or not key:
            raise ConfigError(name, "environment overrides are written MCIL_SECTION__FIELD=value")
        out[f"{section.lower()}.{key.lower()}"] = value
    return out


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """Defaults, then the file at ``path`` (if any), then ``MCIL_SECTION__FIELD`` variables of
    ``environ`` (none unless given; the daemon passes ``os.environ``), then ``overrides``
    (``{"server.listen": ...}``: the command line's ``--set`` and flags)."""
    data = read_config_file(path) if path is not None else {}
    from_env = environment_overrides(environ or {})
    merged = merge_overrides(merge_overrides(data, from_env), overrides or {})
    try:
        return config_from_dict(merged)
    except ConfigError as exc:
        if exc.field in from_env and exc.field not in (overrides or {}):  # say where the bad value came from
            env_name = ENV_PREFIX + exc.field.replace(".", "__").upper()
            raise ConfigError(f"{exc.field} (environment variable {env_name})", exc.problem) from None
        raise
