"""Roles, their attributes and the persona templates.

A role set is a catalogue of roles filtered by attributes (`select`) or by name
(`names`). A template turns a role into a persona sentence. The control (no
persona) is always part of a run, so every persona has its baseline.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Union

import pandas as pd
from omegaconf import MISSING, OmegaConf

from persona_bench.config.errors import ConfigError, did_you_mean
from persona_bench.config.schema import (
    GENDERS,
    ROLE_CATEGORIES,
    RoleConfig,
    RoleSetConfig,
    TemplateConfig,
)
from persona_bench.outputs import CONTROL

# Words whose first letter misleads: a vowel letter sounding like "you"/"wun", a silent h.
_CONSONANT_SOUND = ("uni", "use", "usu", "uti", "eu", "one", "once", "ubiq", "ufo")
_VOWEL_SOUND = ("hour", "honest", "honor", "honour", "heir")
# Initialisms read letter by letter: these letter names start with a vowel sound.
_VOWEL_LETTER_NAMES = set("AEFHILMNORSX")


def article(word: str) -> str:
    """'a' or 'an' by the pronunciation of the word's beginning (an AI model, a CEO, a university professor)."""
    first = word.strip().split(" ")[0].split("-")[0]
    if not first:
        return "a"
    if len(first) > 1 and first.isupper():  # initialism: AI, CEO, MBA
        return "an" if first[0] in _VOWEL_LETTER_NAMES else "a"
    low = first.lower()
    if low.startswith(_VOWEL_SOUND):
        return "an"
    if low.startswith(_CONSONANT_SOUND):
        return "a"
    return "an" if low[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Role:
    name: str
    category: str
    domain: Optional[str]
    subjects: tuple[str, ...]  # MMLU subjects aligned with the role's domain
    gender: str
    interpersonal: bool
    mmlu_aligned: bool
    frequency: Optional[float]
    gender_group: Optional[str]
    article: str


@dataclass(frozen=True)
class Template:
    name: str
    text: str  # "" for the control
    interpersonal_only: bool = False

    def applies_to(self, role: Role) -> bool:
        return not self.interpersonal_only or role.interpersonal

    def render(self, role: Role) -> str:
        return self.text.format(role=role.name, a=role.article)


CONTROL_TEMPLATE = Template(CONTROL, "")


def _matches(role: RoleConfig, select: dict) -> bool:
    for key, wanted in select.items():
        value = getattr(role, key)
        allowed = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        if value not in allowed:
            return False
    return True


def _plain(value):
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _empty_selection(set_name: str, select: dict, catalogue: list[RoleConfig]) -> str:
    """Why role_set.select matches no role: each filter's count alone and the values roles have."""
    parts = []
    for key, wanted in select.items():
        n = sum(_matches(r, {key: wanted}) for r in catalogue)
        values = sorted({repr(getattr(r, key)) for r in catalogue})
        parts.append(f"{key}={wanted!r} alone matches {n} role(s); values of {key} in the catalogue: "
                     + ", ".join(values))
    return (f"role_set {set_name} selects no role: select={select} matches none of its {len(catalogue)} roles; "
            + "; ".join(parts))


def _unknown_names(names: list[str], set_name: str, select: dict, catalogue: list[RoleConfig],
                   chosen: list[str]) -> str:
    """role_set.names that the role set does not hold (with close matches), or that select leaves out."""
    known = [r.name for r in catalogue]
    left_out = [n for n in names if n in known]
    if left_out:
        are, them = ("is", "it") if len(left_out) == 1 else ("are", "them")
        return (f"role_set.names: {', '.join(map(repr, left_out))} {are} in role set {set_name}, but role_set.select="
                f"{select} leaves {them} out; drop the filter (role_set.select={{}}) or pick from the {len(chosen)} "
                "roles it keeps")
    named = ", ".join(f"{n!r}{did_you_mean(n, known)}" for n in names)
    shown = ", ".join(chosen[:30]) + (f", ... ({len(chosen)} in all)" if len(chosen) > 30 else "")
    return f"role_set.names: {named}: not a role of role set {set_name}; valid: {shown}"


def build_roles(cfg: RoleSetConfig) -> list[Role]:
    """The role set's roles, checked: known categories/genders/domains, unique names, not empty."""
    catalogue: list[RoleConfig] = [r if isinstance(r, RoleConfig) else RoleConfig(**r) for r in cfg.roles]
    fields = {f.name for f in dataclasses.fields(RoleConfig)}
    for key in cfg.select:
        if key not in fields:
            raise ConfigError(f"role_set.select: unknown attribute {key!r}{did_you_mean(key, fields)}; "
                              f"valid: {', '.join(sorted(fields))}")
    if not catalogue:
        raise ConfigError(f"role_set {cfg.name} has no roles (role_set.roles is empty); "
                          "see conf/role_set/paper.yaml for the format of a role")
    seen = set()
    for i, r in enumerate(catalogue):
        where = f"role_set {cfg.name}, role {i} ({r.name!r})"
        if r.name == MISSING or not str(r.name or "").strip():
            raise ConfigError(f"role_set {cfg.name}, role {i}: the name is empty; every role needs a name")
        if r.category not in ROLE_CATEGORIES:
            hint = did_you_mean(r.category, ROLE_CATEGORIES)
            raise ConfigError(f"{where}: category={r.category!r} is not valid{hint}; "
                              f"valid: {', '.join(ROLE_CATEGORIES)}")
        if r.gender not in GENDERS:
            raise ConfigError(f"{where}: gender={r.gender!r} is not valid; valid: {', '.join(GENDERS)}")
        if r.domain is not None and r.domain not in cfg.domains:
            raise ConfigError(f"{where}: domain={r.domain!r} is not in role_set.domains ({', '.join(cfg.domains)})")
        if r.name in seen:
            raise ConfigError(f"{where}: the name appears twice")
        seen.add(r.name)
    select = _plain(cfg.select)
    chosen = [r for r in catalogue if _matches(r, select)]
    if not chosen:
        raise ConfigError(_empty_selection(cfg.name, select, catalogue))
    if cfg.names is not None:
        if not cfg.names:
            raise ConfigError(f"role_set.names=[] keeps no role of role set {cfg.name}; list some, "
                              "e.g. [doctor,friend], or null for every role that passes role_set.select")
        twice = sorted({n for n in cfg.names if list(cfg.names).count(n) > 1})
        if twice:
            raise ConfigError(f"role_set.names lists {', '.join(map(repr, twice))} more than once")
        by_name = {r.name: r for r in chosen}
        unknown = [n for n in cfg.names if n not in by_name]
        if unknown:
            raise ConfigError(_unknown_names(unknown, cfg.name, select, catalogue, list(by_name)))
        chosen = [by_name[n] for n in cfg.names]
    return [
        Role(
            name=r.name.strip(),
            category=r.category,
            domain=r.domain,
            subjects=tuple(cfg.domains.get(r.domain, ())) if r.domain else (),
            gender=r.gender,
            interpersonal=bool(r.interpersonal),
            mmlu_aligned=bool(r.mmlu_aligned),
            frequency=r.frequency,
            gender_group=r.gender_group,
            article=r.article or article(r.name.strip()),
        )
        for r in chosen
    ]


def build_templates(cfg: dict[str, TemplateConfig]) -> list[Template]:
    """The run's templates, control first (always present, even when not asked for)."""
    out = [CONTROL_TEMPLATE]
    for name, t in cfg.items():
        if name != CONTROL:
            out.append(Template(name, t.text, bool(t.interpersonal_only)))
    return out


def personas(roles: list[Role], templates: list[Template]) -> list[tuple[Template, Optional[Role]]]:
    """Every (template, role) pair the run scores; the control has no role. A template that applies
    to none of the roles (an interpersonal-only template on occupations) is an error, not a silent gap."""
    out: list[tuple[Template, Optional[Role]]] = []
    for t in templates:
        if t.name == CONTROL:
            out.append((t, None))
            continue
        pairs = [(t, r) for r in roles if t.applies_to(r)]
        if not pairs:
            raise ConfigError(f"template {t.name} applies to interpersonal roles only, and none of the {len(roles)} "
                              "roles chosen is one; drop the template, or choose interpersonal roles "
                              "(e.g. role_set=interpersonal)")
        out += pairs
    return out


def as_role(r: Union[Role, dict]) -> Role:
    """A Role from a Role, a Role-shaped dict, or a role of job.json's identity.role_set.roles
    (RoleConfig-shaped: no subjects, article null = by pronunciation, as roles.build_roles does)."""
    if isinstance(r, Role):
        return r

    def get(key, default=None):  # records of a DataFrame hold NaN where a value is missing
        v = r.get(key, default)
        return default if v is None or (isinstance(v, float) and math.isnan(v)) else v

    name = str(r["name"]).strip()
    subjects = get("subjects")
    return Role(
        name=name,
        category=get("category", "other"),
        domain=get("domain"),
        subjects=tuple(subjects) if subjects is not None else (),
        gender=get("gender", "unknown"),
        interpersonal=bool(get("interpersonal", False)),
        mmlu_aligned=bool(get("mmlu_aligned", False)),
        frequency=get("frequency"),
        gender_group=get("gender_group"),
        article=get("article") or article(name),
    )


def roles_of_run(identity: dict) -> list[Role]:
    """The roles a run scored, from job.json's identity: its role set rebuilt with roles.build_roles
    (the same selection and articles the run used)."""
    rs = dict(identity["role_set"])
    return build_roles(RoleSetConfig(**rs))


def persona_texts(templates: dict[str, Any], roles: Iterable[Union[Role, dict]]) -> pd.DataFrame:
    """(template, role, text): every persona sentence as the run rendered it (roles.Template.render).

    templates: {name: text} (summary.json's "templates") or {name: {"text", "interpersonal_only"}}
    (job.json's identity.template). The control (empty text) has no sentence and is left out;
    an interpersonal-only template is rendered only for interpersonal roles, as the run does."""
    roles = [as_role(r) for r in roles]
    rows = []
    for name, spec in templates.items():
        text, only = (spec, False) if isinstance(spec, str) else (spec["text"], bool(spec.get("interpersonal_only")))
        if name == CONTROL or not text:
            continue
        t = Template(name, text, only)
        rows += [(name, r.name, t.render(r)) for r in roles if t.applies_to(r)]
    return pd.DataFrame(rows, columns=["template", "role", "text"])


# A female role's male counterpart is its name with one of these words swapped (whole name first, then the
# longest word inside it: "mother-in-law" -> "father-in-law", "girlfriend" -> "boyfriend"); the catalogue's
# `gender` facts decide whether the pair counts (female and male).
COUNTERPARTS = {"grandmother": "grandfather", "mother": "father", "mommy": "daddy", "mom": "dad", "mama": "papa",
                "sister": "brother", "daughter": "son", "wife": "husband", "girl": "boy", "fiancée": "fiancé",
                "aunt": "uncle", "niece": "nephew", "woman": "man", "queen": "king", "grandma": "grandpa"}


def counterpart(name: str) -> Optional[str]:
    """The male counterpart's name of a female role's name by COUNTERPARTS, or None."""
    low = name.lower()
    if low in COUNTERPARTS:
        return COUNTERPARTS[low]
    for word in sorted(COUNTERPARTS, key=len, reverse=True):
        if word in low:
            return low.replace(word, COUNTERPARTS[word], 1)
    return None


def gendered_pairs(genders: dict[str, str]) -> list[tuple[str, str]]:
    """(female role, male role) pairs among the roles of `genders` (role name -> the catalogue's gender): each
    female role whose counterpart (COUNTERPARTS) is a male role there, in the order of `genders`."""
    male = {n.lower(): n for n, g in genders.items() if g == "male"}
    pairs = []
    for name, g in genders.items():
        other = counterpart(name) if g == "female" else None
        if other is not None and other in male:
            pairs.append((name, male[other]))
    return pairs
