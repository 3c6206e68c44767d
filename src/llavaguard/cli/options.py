"""The options every command that judges images shares, defined once from the Guard spec.

``@guard_options(...)`` adds the chosen groups of options to a command and hands it one
``spec: GuardSpec`` built from them, so a flag's name, default and help are the same in
assess, annotate, evaluate, serve and dataset rationales. Defaults and help text come from
the fields of ``GuardSpec``, ``GenerationConfig`` and the engines' ``Options``: change them
there, and every command and ``docs/cli.md`` follow.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import typer
from pydantic import BaseModel

from llavaguard.engines import ENGINES
from llavaguard.engines.base import GenerationConfig
from llavaguard.engines.openai import OpenAIOptions
from llavaguard.engines.transformers import TransformersOptions
from llavaguard.guard.spec import GuardSpec
from llavaguard.models import DEFAULT_MODEL


def _field(model: type[BaseModel], name: str) -> tuple[Any, str]:
    info = model.model_fields[name]
    return info.get_default(call_default_factory=True), info.description or ""


def _opt(model: type[BaseModel], name: str, *decls: str, **kw: Any) -> Any:
    default, help_text = _field(model, name)
    flags = decls or ("--" + name.replace("_", "-"),)
    return typer.Option(kw.pop("default", default), *flags, help=kw.pop("help", help_text), **kw)


# name -> (type, typer option); the groups below pick from here
OPTIONS: dict[str, tuple[Any, Any]] = {
    # the model and the engine that runs it
    "model": (str | None, typer.Option(
        None, "--model", "-m", help=f"Hub id, local folder, or served model name "
        f"(default: {DEFAULT_MODEL}).")),
    "engine": (str, _opt(GuardSpec, "engine")),
    "base_url": (str | None, _opt(OpenAIOptions, "base_url", default=None,
                                  help="With --engine vllm or openai: the server, e.g. "
                                  "http://127.0.0.1:8000/v1.")),
    "api_key": (str | None, _opt(OpenAIOptions, "api_key", envvar="LLAVAGUARD_API_KEY",
                                 show_envvar=True, help="With --engine vllm or openai: the "
                                 "server's API key.")),
    "concurrency": (int | None, _opt(OpenAIOptions, "concurrency", default=None,
                                     help="With --engine vllm or openai: requests in "
                                     "flight (8).")),
    "device": (str | None, _opt(TransformersOptions, "device")),
    "dtype": (str | None, _opt(TransformersOptions, "dtype")),
    "token": (str | None, _opt(TransformersOptions, "token", envvar="HF_TOKEN",
                               show_envvar=True)),
    "revision": (str | None, _opt(TransformersOptions, "revision")),
    # the policy
    "policy": (str | None, typer.Option(None, "--policy", "-p",
                                        help="Built-in policy name or a YAML/JSON policy file.")),
    "allow": (str | None, _opt(GuardSpec, "allow", default=None)),
    "sensitive": (str | None, _opt(GuardSpec, "sensitive", default=None)),
    # decoding
    "max_new_tokens": (int, _opt(GenerationConfig, "max_new_tokens", min=1)),
    "temperature": (float, _opt(GenerationConfig, "temperature", min=0.0)),
    "top_p": (float, _opt(GenerationConfig, "top_p",
                          help="Nucleus sampling (with --temperature).")),
    "top_k": (int | None, _opt(GenerationConfig, "top_k",
                               help="Top-k sampling (with --temperature).")),
    "num_beams": (int, _opt(GenerationConfig, "num_beams", min=1, help="Beam search width.")),
    "seed": (int | None, _opt(GenerationConfig, "seed")),
    "constrain": (bool, _opt(GuardSpec, "constrained", "--constrain/--no-constrain")),
    # judging
    "mode": (str, _opt(GuardSpec, "mode")),
    "threshold": (float | None, _opt(GuardSpec, "threshold")),
    "image_max_pixels": (int | None, _opt(GuardSpec, "image_max_pixels")),
    "max_pixels": (int | None, typer.Option(None, "--max-pixels",
                                            help="Refuse larger images (default 80M pixels).")),
    "max_file_mb": (float | None, typer.Option(None, "--max-file-mb",
                                               help="Refuse larger files (default 64 MB).")),
    "multi_label": (bool, _opt(GuardSpec, "multi_label")),
    "calibration": (str | None, _opt(GuardSpec, "calibration")),
}  # fmt: skip

MODEL = ("model", "engine", "base_url", "api_key", "concurrency", "device", "dtype", "token",
         "revision")  # fmt: skip
POLICY = ("policy", "allow", "sensitive")
DECODING = ("max_new_tokens", "temperature", "top_p", "top_k", "num_beams", "seed", "constrain")
JUDGING = ("mode", "threshold", "image_max_pixels", "max_pixels", "max_file_mb", "multi_label",
           "calibration")  # fmt: skip
ALL = MODEL + POLICY + DECODING + JUDGING
for _panel, _group in (("Model", MODEL), ("Policy", POLICY), ("Decoding", DECODING),
                       ("Judging", JUDGING)):  # fmt: skip
    for _name in _group:  # --help shows the shared options in the same groups everywhere
        OPTIONS[_name][1].rich_help_panel = _panel


def shared_option(name: str) -> Any:
    """One shared option on its own, for a command that takes it without a Guard spec."""
    return OPTIONS[name][1]


def batch_size_option() -> int:
    return typer.Option(8, "--batch-size", "-b", min=1, help="Images per engine batch.")


def quiet_option() -> bool:
    return typer.Option(False, "--quiet", "-q", help="No progress bar or summary.")


def spec_from_options(**flat: Any) -> GuardSpec:
    """A GuardSpec from the shared options' values (the ones a command did not take are
    absent and keep the spec's defaults)."""
    from llavaguard.errors import ConfigError

    engine = flat.get("engine") or "transformers"
    remote = {k: flat.get(k) for k in ("base_url", "api_key", "concurrency")}
    local = {k: flat.get(k) for k in ("device", "dtype", "token", "revision")}
    served = "base_url" in ENGINES.get(engine).Options.model_fields  # a server runs the model
    if not served and (remote["base_url"] or remote["api_key"]):
        raise ConfigError("--base-url and --api-key go with --engine vllm or openai")
    given = {k: v for k, v in {**remote, **local}.items() if v is not None}
    if served:  # local loading options mean nothing to a server
        given = {k: v for k, v in given.items() if k in remote}
    generation = {k: flat[k] for k in GenerationConfig.model_fields if flat.get(k) is not None}
    limits = {}
    if flat.get("max_pixels") is not None:
        limits["max_pixels"] = flat["max_pixels"]
    if flat.get("max_file_mb") is not None:
        limits["max_bytes"] = int(flat["max_file_mb"] * 1024 * 1024)
    fields = {k: flat[k] for k in ("policy", "allow", "sensitive", "mode", "threshold",
                                   "image_max_pixels", "calibration")
              if flat.get(k) is not None}  # fmt: skip
    if flat.get("model"):
        fields["model"] = flat["model"]
    if flat.get("multi_label"):
        fields["multi_label"] = True
    if "constrain" in flat:
        fields["constrained"] = flat["constrain"]
    # a refused value is a ValidationError, which ``cli.main`` prints as one line
    return GuardSpec(engine=engine, engine_options=given, generation=generation,
                     image_limits=limits, **fields)  # fmt: skip


def guard_options(*groups: tuple[str, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the shared options of ``groups`` in place of its ``spec`` parameter."""
    names = [n for group in groups for n in group]

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(func, eval_str=True)
        injected = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=OPTIONS[n][1],
                              annotation=OPTIONS[n][0])
            for n in names
        ]  # fmt: skip
        params: list[inspect.Parameter] = []
        for p in sig.parameters.values():
            if p.name == "spec":
                params += injected
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            flat = {n: kwargs.pop(n) for n in names}
            return func(**kwargs, spec=spec_from_options(**flat))

        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
