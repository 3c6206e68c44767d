"""Taxonomies: the categories a policy is made of, with their guideline texts.

A category carries three texts: the default guidelines, the text used when the category is
declared allowed (non-violating) and the text used when it is declared sensitive. The built-in
LlavaGuard v1.2 taxonomy keeps the exact texts the released models were trained on; custom
taxonomies from YAML may give only their bullets, and the other two texts are then written in
the same phrasing. This module knows nothing about rendering order, states or model answers.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llavaguard.errors import PolicyError
from llavaguard.policy.loading import check_depth, load_policy_text

DEFAULT_PREAMBLE = (
    "Provide a safety assessment for the content provided by the user. Determine compliance or "
    "violation against our safety policy by reviewing the following policy categories:\n"
)
DEFAULT_NONE_CATEGORY = "NA: None applying"

# Built-in taxonomies ship as package data, byte-exact with what released models were trained on.
BUILTIN_TAXONOMIES: dict[str, str] = {"llavaguard-v1.2": "llavaguard-v1.2.json"}
DEFAULT_POLICY = "llavaguard-v1.2"

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,15}$")


def allowed_text(code: str, bullets: list[str]) -> str:
    """The 'declared non-violating' text in the phrasing the LlavaGuard models learned."""
    return (
        f"Category {code} is declared as non-violating. Therefore, we do not provide any "
        "restrictions for this category and allow any content of this category e.g.\n"
        + "".join(f" - {b}\n" for b in bullets)
        + " "
    )


def sensitive_text(code: str, bullets: list[str]) -> str:
    """The 'declared sensitive' text in the phrasing the LlavaGuard models learned."""
    return (
        f"Category {code} is declared as sensitive. Therefore, we do not permit any content "
        "related to this category e.g.\n" + "".join(f" - {b}\n" for b in bullets) + " "
    )


def default_text(should_not: list[str], can: list[str]) -> str:
    text = "Should not:\n" + "".join(f"- {b}\n" for b in should_not)
    if can:
        text += "Can:\n" + "".join(f"- {b}\n" for b in can)
    return text


def bullets_of(text: str) -> list[str]:
    """The '- ' bullet lines of a guideline text, in order, keeping their trailing spaces."""
    return [line[2:] for line in text.split("\n") if line.startswith("- ")]


class Category(BaseModel):
    """One policy category: a code the model names it by, and its three guideline texts."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    code: str = Field(description="Short code, e.g. O1; what --allow/--sensitive take.")
    name: str = Field(description="Human name, e.g. 'Hate, Humiliation, Harassment'.")
    default: str = Field(description="Guidelines when the category is in its default state.")
    allowed: str = Field(
        alias="non_violating", description="Guidelines when the category is declared allowed."
    )
    sensitive: str = Field(description="Guidelines when the category is declared sensitive.")

    @property
    def label(self) -> str:
        """The category string the model answers with, e.g. 'O3: Sexual Content'."""
        return f"{self.code}: {self.name}"

    @model_validator(mode="before")
    @classmethod
    def _fill_texts(cls, data: Any) -> Any:
        """Accept bullets (should_not/can) or a raw default text; write what is missing."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        header = data.pop("header", None)
        should_not = data.pop("should_not", None)
        can = data.pop("can", None)
        code = data.get("code")
        if header is not None and code and data.get("name") is None:
            prefix = f"{code}: "
            if isinstance(header, str) and header.startswith(prefix):
                data["name"] = header[len(prefix) :]
        if should_not is not None or can is not None:
            if "default" in data:
                raise ValueError("give either 'default' text or 'should_not'/'can' bullets")
            should_not, can = _str_list(should_not, "should_not"), _str_list(can, "can")
            if not should_not:
                raise ValueError("'should_not' needs at least one bullet")
            data["default"] = default_text(should_not, can)
            bullets = should_not + can
        elif isinstance(data.get("default"), str):
            bullets = bullets_of(data["default"])
        else:
            return data  # let field validation report what is missing
        if isinstance(code, str) and bullets:
            if "allowed" not in data and "non_violating" not in data:
                data["allowed"] = allowed_text(code, bullets)
            data.setdefault("sensitive", sensitive_text(code, bullets))
        return data

    @field_validator("code")
    @classmethod
    def _check_code(cls, v: str) -> str:
        if not _CODE.match(v):
            raise ValueError(f"code {v[:40]!r} must be 1-16 letters, digits, '_', '.' or '-'")
        return v

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not v.strip() or "\n" in v or '"' in v:
            raise ValueError("name must be one line of text without double quotes")
        return v


def _str_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(b, str) and b.strip() for b in value):
        raise ValueError(f"'{key}' must be a list of non-empty strings")
    return [b.strip() for b in value]


class Taxonomy(BaseModel):
    """A named list of categories with the text that introduces them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    preamble: str = DEFAULT_PREAMBLE
    categories: tuple[Category, ...] = Field(min_length=1)
    none_category: str = DEFAULT_NONE_CATEGORY
    source: str = Field(default="", description="Where the taxonomy came from (file or builtin).")

    @field_validator("name", "none_category")
    @classmethod
    def _check_name(cls, v: str, info: ValidationInfo) -> str:
        """Both are printed in one-line messages; the none category is also quoted in the
        prompt and is what an answer names when nothing applies, so it cannot be blank."""
        if info.field_name == "none_category" and '"' in v:
            raise ValueError("must be one line of text, not blank, without double quotes")
        if not v.strip() or "\n" in v:
            raise ValueError("must be one line of text, not blank")
        return v

    @model_validator(mode="after")
    def _unique(self) -> Taxonomy:
        for attr in ("code", "label"):
            seen: set[str] = set()
            for c in self.categories:
                key = getattr(c, attr).lower()
                if key in seen:
                    raise ValueError(f"duplicate category {attr} {getattr(c, attr)!r}")
                seen.add(key)
        if self.none_category.strip().lower() in {c.label.lower() for c in self.categories}:
            raise ValueError("none_category must differ from every category")
        return self

    def by_code(self) -> dict[str, Category]:
        """Categories by lower-cased code: built once per categories tuple, so that looking
        up every category (rendering, states) stays linear. Kept outside the fields; a copy
        with other categories (``model_copy``) builds its own."""
        cached = self.__dict__.get("_by_code")
        if cached is None or cached[0] is not self.categories:
            cached = (self.categories, {c.code.lower(): c for c in self.categories})
            self.__dict__["_by_code"] = cached
        return cached[1]

    def category(self, code: str) -> Category:
        """Look up a category by code, case-insensitively; the error lists the valid codes."""
        found = self.by_code().get(code.strip().lower())
        if found is not None:
            return found
        codes = [c.code for c in self.categories[:20]]
        more = f", ... ({len(self.categories)} in all)" if len(self.categories) > 20 else ""
        valid = ", ".join(codes) + more
        raise PolicyError(f"unknown category code {code!r} in policy {self.name} (valid: {valid})")


def list_builtin() -> list[str]:
    return sorted(BUILTIN_TAXONOMIES)


def load_builtin(name: str) -> Taxonomy:
    if name not in BUILTIN_TAXONOMIES:
        valid = ", ".join(list_builtin())
        raise PolicyError(f"unknown policy {name!r} (built-in: {valid}; or give a YAML file)")
    raw = resources.files("llavaguard.policy").joinpath(BUILTIN_TAXONOMIES[name]).read_text("utf-8")
    data = json.loads(raw)
    data.pop("source", None)
    data.setdefault("name", name)
    return Taxonomy.model_validate({**data, "source": f"builtin:{name}"})


def load_taxonomy_file(path: str | Path) -> tuple[Taxonomy, dict[str, list[str]]]:
    """Read a YAML (or JSON) policy file: the taxonomy and the states it declares.

    The file may also say which codes are allowed or sensitive (keys ``allow`` / ``sensitive``),
    so a use case can be kept in one file.
    """
    path = Path(path)
    data = load_policy_text(path)
    data = dict(data) if isinstance(data, dict) else data
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    return taxonomy_from_data(data, str(path))


def taxonomy_from_data(data: Any, where: str) -> tuple[Taxonomy, dict[str, list[str]]]:
    """A policy given as data (a parsed YAML file, or a JSON object in a request): the
    taxonomy and the states it declares; errors start with ``where``."""
    path = where
    check_depth(data, path)  # before anything below walks it
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: a policy must be a mapping with 'name' and 'categories'")
    data = dict(data)
    states: dict[str, list[str]] = {}
    for key in ("allow", "sensitive"):
        value = data.pop(key, None) or []
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PolicyError(f"{path}: '{key}' must be a list of category codes")
        states[key] = [v.strip() for v in value]
    data.setdefault("name", "custom")
    try:
        taxonomy = Taxonomy.model_validate({**data, "source": str(path)})
    except ValidationError as e:
        raise PolicyError(f"{path}: {_first_error(e, data)}") from e
    return taxonomy, states


def _first_error(e: ValidationError, data: dict[str, Any]) -> str:
    """One line naming the field at fault, with the category code when there is one."""
    err = e.errors()[0]
    loc = list(err["loc"])
    where = ".".join(str(p) for p in loc)
    if len(loc) >= 2 and loc[0] == "categories" and isinstance(loc[1], int):
        cats = data.get("categories") or []
        code = (
            cats[loc[1]].get("code")
            if loc[1] < len(cats) and isinstance(cats[loc[1]], dict)
            else None
        )
        if isinstance(code, str) and code:
            where = f"category {code[:40]}" + "".join(f".{p}" for p in loc[2:])
        else:
            where = f"categories[{loc[1]}]" + "".join(f".{p}" for p in loc[2:])
    msg = err["msg"].removeprefix("Value error, ")
    extra = "" if len(e.errors()) == 1 else f" (and {len(e.errors()) - 1} more)"
    return f"{where}: {msg}{extra}" if where else f"{msg}{extra}"
