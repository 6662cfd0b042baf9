"""Roles, their attributes and the persona templates.

A role set is a catalogue of roles filtered by attributes (`select`) or by name
(`names`). A template turns a role into a persona sentence. The control (no
persona) is always part of a run, so every persona has its baseline.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from omegaconf import OmegaConf

from .config import GENDERS, ROLE_CATEGORIES, ConfigError, RoleConfig, RoleSetConfig, TemplateConfig

CONTROL = "control"

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


def build_roles(cfg: RoleSetConfig) -> list[Role]:
    """The role set's roles, checked: known categories/genders/domains, unique names, not empty."""
    catalogue: list[RoleConfig] = [r if isinstance(r, RoleConfig) else RoleConfig(**r) for r in cfg.roles]
    fields = {f.name for f in dataclasses.fields(RoleConfig)}
    for key in cfg.select:
        if key not in fields:
            raise ConfigError(f"role_set.select: unknown attribute {key!r}; valid: {', '.join(sorted(fields))}")
    seen = set()
    for i, r in enumerate(catalogue):
        where = f"role_set {cfg.name}, role {i} ({r.name!r})"
        if not str(r.name or "").strip():
            raise ConfigError(f"role_set {cfg.name}, role {i}: the name is empty")
        if r.category not in ROLE_CATEGORIES:
            raise ConfigError(f"{where}: category={r.category!r}; valid: {', '.join(ROLE_CATEGORIES)}")
        if r.gender not in GENDERS:
            raise ConfigError(f"{where}: gender={r.gender!r}; valid: {', '.join(GENDERS)}")
        if r.domain is not None and r.domain not in cfg.domains:
            raise ConfigError(f"{where}: domain={r.domain!r} is not in role_set.domains ({', '.join(cfg.domains)})")
        if r.name in seen:
            raise ConfigError(f"{where}: the name appears twice")
        seen.add(r.name)
    chosen = [r for r in catalogue if _matches(r, cfg.select)]
    if cfg.names is not None:
        by_name = {r.name: r for r in chosen}
        unknown = [n for n in cfg.names if n not in by_name]
        if unknown:
            raise ConfigError(
                f"role_set.names: {', '.join(map(repr, unknown))} not in role set {cfg.name} "
                f"(after select={OmegaConf.to_container(cfg.select) if OmegaConf.is_config(cfg.select) else cfg.select})"
            )
        chosen = [by_name[n] for n in cfg.names]
    if not chosen:
        raise ConfigError(f"role_set {cfg.name} selects no role (select={dict(cfg.select)}, names={cfg.names})")
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
    """Every (template, role) pair the run scores; the control has no role."""
    out: list[tuple[Template, Optional[Role]]] = []
    for t in templates:
        if t.name == CONTROL:
            out.append((t, None))
        else:
            out += [(t, r) for r in roles if t.applies_to(r)]
    return out
