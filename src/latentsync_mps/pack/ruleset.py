"""Loading and validating the rule packs under `patches/`.

    patches/upstreams.toml              known upstream releases: repository, commit, profile, fingerprint,
                                        and what each is like at run time (facts: release_facts.py)
    patches/<profile>/profile.toml      how to recognise the upstream, where the runtime helper goes,
                                        and (`include`) other profiles whose rule files it also uses
    patches/<profile>/<topic>.toml      [[rule]] entries
    patches/findings/<topic>.toml       [[rule]] entries of detection-only kinds (rules/report.py): every
                                        tree gets them, with or without a profile
    patches/order.toml                  the order rule kinds run in within one file (a pack of
                                        one's own without it uses the bundled one)
    patches/torch-cuda.toml             the texts a rule's `texts` option names (cuda_texts.py): read
                                        here and handed to the rule's kind as `rule.inputs`

Every problem is reported as a RuleFileError naming the file and, where there is one, the rule.
What the rule kinds know (their names, their options) the loader asks of a KindCatalog, which the
port gives (port/rulepack.py): the pack imports no kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from latentsync_mps.pack.cuda_texts import texts_for
from latentsync_mps.pack.errors import RuleFileError, TextsFileError, TomlSyntaxError
from latentsync_mps.pack.paths import FINDINGS_DIR, bundled_patches_dir
from latentsync_mps.pack.release_facts import ReleaseFacts
from latentsync_mps.pack.release_facts import parse as parse_facts
from latentsync_mps.pack.rule import Example, Expectation, Rule, path_matches
from latentsync_mps.pack.toml_files import read_toml


class KindCatalog(Protocol):
    """The rule kinds, as the loader needs them."""

    def names(self) -> list[str]:
        """Every kind's name, sorted."""

    def reports_only(self, kind: str) -> bool:
        """Whether the kind only reports (its rules go in findings/) rather than rewrites."""

    def problem(self, rule: Rule) -> str | None:
        """What is wrong with the rule's options for its kind, or None."""

    def build(self, rule: Rule) -> Any:
        """The rule as its configured kind."""


@dataclass(frozen=True)
class Fingerprint:
    present: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    contains: tuple[tuple[str, str], ...] = ()  # (file, text)
    lacks: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Release:
    name: str
    profile: str
    version: Version
    repository: str
    commit: str
    fingerprint: Fingerprint
    # rule id -> why this release has nothing for it to port: that rule's expectations are not
    # checked here (e.g. a wrapper snapshot from before 1.6 made AlignRestore float16).
    nothing_to_port: dict[str, str] = field(default_factory=dict)
    # What the release is like at run time (release_facts.py); None for a release without them.
    facts: ReleaseFacts | None = None
    date: str | None = None  # the commit's date (YYYY-MM-DD), shown by `lsync-port targets`


ORDER_FILE = "order.toml"


@dataclass(frozen=True)
class KindOrder:
    """The order rule kinds run in within one file's pass (patches/order.toml): groups, first
    first; `"*"` marks the group of every kind not named."""

    groups: tuple[tuple[str, ...], ...] = (("*",),)

    def rank(self, kind: str) -> int:
        rest = len(self.groups)
        for index, group in enumerate(self.groups):
            if kind in group:
                return index
            if "*" in group:
                rest = index
        return rest


@dataclass
class Profile:
    name: str
    title: str
    detect: tuple[str, ...]
    priority: int
    runtime_module: str
    runtime_path: str
    inference_path: tuple[str, ...]
    # Rule files of these profiles are loaded into this one too (a tree that vendors another).
    include: tuple[str, ...] = ()
    # glob -> module: files that must import the helper differently (".x._lsync_port" = relative).
    runtime_module_overrides: dict[str, str] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)
    kind_order: KindOrder = field(default_factory=KindOrder)
    catalog: KindCatalog | None = None  # set by load()

    def runtime_module_for(self, relpath: str) -> str:
        """How rewritten code in `relpath` imports the runtime helper."""
        for glob, module in self.runtime_module_overrides.items():
            if path_matches(relpath, [glob]):
                return module
        return self.runtime_module

    def kinds(self) -> list[Any]:
        """Every rule of this profile as its configured kind, in execution order."""
        assert self.catalog is not None
        built = [self.catalog.build(rule) for rule in self.rules]
        for kind in built:
            kind.rank = self.kind_order.rank(kind.rule.kind)
        return sorted(built, key=lambda k: k.rank)  # stable: file order within a rank


@dataclass
class RulePack:
    root: Path
    profiles: dict[str, Profile]
    findings: list[Rule] = field(default_factory=list)  # detection-only rules, for every tree
    catalog: KindCatalog | None = None  # set by load()

    def detectors(self) -> list[Any]:
        """The detection-only rules as their configured kinds, in file order."""
        assert self.catalog is not None
        return [self.catalog.build(rule) for rule in self.findings]

    def rule(self, rule_id: str) -> Rule | None:
        """The rule with this id, as its own profile defines it (not as a profile including it)."""
        found = [r for p in self.profiles.values() for r in p.rules if r.id == rule_id]
        found += [r for r in self.findings if r.id == rule_id]
        own = [r for r in found if Path(r.source).parent.name == r.profile]  # findings/ is its own too
        return (own or found or [None])[0]


def load(root: Path, catalog: KindCatalog) -> RulePack:
    """The rule packs under `root`, each rule checked against the kinds of `catalog`."""
    profiles: dict[str, Profile] = {}
    files: dict[str, Path] = {}
    for profile_file in sorted(root.glob("*/profile.toml")):
        profile = _load_profile(profile_file)
        profile.catalog = catalog
        profiles[profile.name] = profile
        files[profile.name] = profile_file
    if not profiles:
        raise RuleFileError(root, "no rule packs found (expected <profile>/profile.toml)")
    for profile in profiles.values():
        for source in (*profile.include, profile.name):
            if source not in profiles or (source != profile.name and profiles[source].include):
                raise RuleFileError(files[profile.name], f"includes unknown or nested profile '{source}'")
            for rule_file in sorted(files[source].parent.glob("*.toml")):
                if rule_file.name != "profile.toml":
                    profile.rules.extend(_load_rules(rule_file, profile.name, catalog))
    _check_unique_ids(profiles)
    findings_dir = root / FINDINGS_DIR
    if not findings_dir.is_dir():  # a rule pack of one's own (LSYNC_PORT_PATCHES) without it
        findings_dir = bundled_patches_dir() / FINDINGS_DIR
    findings = [
        rule for path in sorted(findings_dir.glob("*.toml")) for rule in _load_rules(path, FINDINGS_DIR, catalog)
    ]
    _check_unique_ids({FINDINGS_DIR: Profile(FINDINGS_DIR, "", (), 0, "", "", (), rules=findings)})
    _check_supersedes(findings)
    order = _load_order(root / ORDER_FILE, catalog)
    for profile in profiles.values():
        profile.kind_order = order
    upstreams = root / "upstreams.toml"
    if upstreams.exists():
        for release in _load_releases(upstreams, profiles):
            profiles[release.profile].releases.append(release)
    for profile in profiles.values():
        profile.releases.sort(key=lambda r: r.version)
    return RulePack(root, profiles, findings, catalog)


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_toml(path)
    except TomlSyntaxError as error:
        raise RuleFileError(path, f"not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RuleFileError(path, f"cannot be read: {error}") from None


class _Fields:
    """Typed access to one TOML table that turns every mistake into a RuleFileError."""

    def __init__(self, table: dict[str, Any], path: Path, rule_id: str | None = None) -> None:
        self.table, self.path, self.rule_id = dict(table), path, rule_id

    def fail(self, message: str) -> RuleFileError:
        return RuleFileError(self.path, message, self.rule_id)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                raise self.fail(f"missing field '{key}'")
            return default
        value = self.table.pop(key)
        if not isinstance(value, kind):
            raise self.fail(f"field '{key}' has the wrong type ({type(value).__name__})")
        return value

    def strings(self, key: str, default: Any = ...) -> tuple[str, ...]:
        value = self.get(key, list, default)
        if not all(isinstance(v, str) for v in value):
            raise self.fail(f"field '{key}' must be a list of strings")
        return tuple(value)

    def specifier(self, key: str, default: str) -> SpecifierSet:
        text = self.get(key, str, default)
        try:
            return SpecifierSet(text)
        except InvalidSpecifier:
            raise self.fail(f"field '{key}' is not a version range such as '>=1.5': {text!r}") from None

    def done(self) -> None:
        if self.table:
            raise self.fail(f"unknown field(s): {', '.join(sorted(self.table))}")


def _load_profile(path: Path) -> Profile:
    fields = _Fields(_read(path), path)
    profile = Profile(
        name=fields.get("name", str),
        title=fields.get("title", str),
        detect=fields.strings("detect"),
        priority=fields.get("priority", int, 0),
        runtime_module=fields.get("runtime_module", str),
        runtime_path=fields.get("runtime_path", str),
        inference_path=fields.strings("inference_path"),
        include=fields.strings("include", []),
        runtime_module_overrides=fields.get("runtime_module_overrides", dict, {}),
    )
    fields.done()
    if not all(isinstance(v, str) for v in profile.runtime_module_overrides.values()):
        raise RuleFileError(path, "runtime_module_overrides must map globs to module names")
    if profile.name != path.parent.name:
        raise RuleFileError(path, f"name '{profile.name}' differs from its folder '{path.parent.name}'")
    return profile


def _load_rules(path: Path, profile: str, catalog: KindCatalog) -> list[Rule]:
    data = _read(path)
    entries = data.pop("rule", [])
    if data:
        raise RuleFileError(path, f"unknown top-level table(s): {', '.join(sorted(data))}; rules go in [[rule]]")
    return [_load_rule(entry, path, profile, catalog) for entry in entries]


def _load_rule(entry: dict[str, Any], path: Path, profile: str, catalog: KindCatalog) -> Rule:
    fields = _Fields(entry, path)
    rule_id = fields.get("id", str)
    fields.rule_id = rule_id
    kind = fields.get("kind", str)
    if kind not in catalog.names():
        raise fields.fail(f"unknown kind '{kind}' (known: {', '.join(catalog.names())})")
    releases = fields.specifier("releases", "")
    expect = []
    for item in fields.get("expect", list, []):
        sub = _Fields(item, path, rule_id)
        expect.append(
            Expectation(
                sub.get("file", str),
                sub.specifier("releases", str(releases)),
                sub.get("min", int, 1),
                sub.get("profile", str, None),
            )
        )
        sub.done()
    detection = catalog.reports_only(kind)
    if detection != (profile == FINDINGS_DIR):
        where = f"{FINDINGS_DIR}/" if detection else "a profile's folder"
        raise fields.fail(f"kind '{kind}' {'only reports' if detection else 'rewrites'}: its rules go in {where}")
    examples = []
    for item in fields.get("example", list, []):
        sub = _Fields(item, path, rule_id)
        report = sub.get("report", list, None)
        if report is not None and not all(isinstance(n, int) and n >= 1 for n in report):
            raise sub.fail("field 'report' must be a list of line numbers (1 and up)")
        example = Example(
            sub.get("before", str),
            sub.get("after", str, None),
            sub.get("path", str, ""),
            None if report is None else tuple(report),
        )
        if detection and (example.after is not None or example.report is None):
            raise sub.fail("an example of a detection-only rule has `report` (the lines reported), no `after`")
        if not detection and example.report is not None:
            raise sub.fail("`report` is for detection-only rules; a rewriting rule's example has `after`")
        sub.done()
        examples.append(example)
    rule = Rule(
        id=rule_id,
        kind=kind,
        summary=fields.get("summary", str),
        files=fields.strings("files"),
        exclude=fields.strings("exclude", []),
        releases=releases,
        expect=tuple(expect),
        examples=tuple(examples),
        options=fields.get("options", dict, {}),
        source=str(path),
        profile=profile,
        default=fields.get("default", bool, True),
    )
    fields.done()
    if not rule.examples:
        raise fields.fail("has no [[rule.example]]: every rule carries before/after examples")
    rule = replace(rule, inputs=_read_inputs(rule, fields))
    problem = catalog.problem(rule)
    if problem is not None:
        raise fields.fail(problem)
    return rule


def _read_inputs(rule: Rule, fields: _Fields) -> dict[str, Any]:
    """The pack files the rule's options name, read: `texts`, a texts file (cuda_texts.py)."""
    texts = rule.options.get("texts")
    if not isinstance(texts, str):
        return {}  # none, or no file name: the kind says what is wrong with the option
    try:
        return {"texts": texts_for(texts, Path(rule.source))}
    except TextsFileError as error:
        raise fields.fail(f"option 'texts': {error}") from None


def _check_supersedes(findings: list[Rule]) -> None:
    """A detection rule's `supersedes` names other detection rules of the pack."""
    known = {rule.id for rule in findings}
    for rule in findings:
        named = rule.options.get("supersedes", [])
        unknown = [i for i in ([named] if isinstance(named, str) else named) if i not in known or i == rule.id]
        if unknown:
            message = f"option 'supersedes': no other detection rule {', '.join(map(repr, unknown))}"
            raise RuleFileError(Path(rule.source), message, rule.id)


def _load_order(path: Path, catalog: KindCatalog) -> KindOrder:
    if not path.exists():  # a rule pack of one's own (LSYNC_PORT_PATCHES) without the file
        path = bundled_patches_dir() / ORDER_FILE
    fields = _Fields(_read(path), path)
    groups = fields.get("groups", list)
    fields.done()
    if not all(isinstance(g, list) and g and all(isinstance(k, str) for k in g) for g in groups):
        raise RuleFileError(path, "'groups' must be a list of non-empty lists of kind names")
    named = [k for g in groups for k in g]
    unknown = sorted(set(named) - set(catalog.names()) - {"*"})
    if unknown:
        raise RuleFileError(path, f"unknown kind(s) {', '.join(unknown)} (known: {', '.join(catalog.names())})")
    twice = sorted({k for k in named if named.count(k) > 1})
    if twice:
        raise RuleFileError(path, f"kind(s) named more than once: {', '.join(twice)}")
    return KindOrder(tuple(tuple(g) for g in groups))


def _check_unique_ids(profiles: dict[str, Profile]) -> None:
    seen: dict[str, str] = {}
    for profile in profiles.values():
        for rule in profile.rules:
            key = f"{profile.name}:{rule.id}"
            if key in seen:
                raise RuleFileError(Path(rule.source), f"duplicate rule id (also in {seen[key]})", rule.id)
            seen[key] = rule.source


def _load_releases(path: Path, profiles: dict[str, Profile]) -> list[Release]:
    releases = []
    data = _read(path)
    for entry in data.pop("release", []):
        fields = _Fields(entry, path)
        name = fields.get("name", str)
        fields.rule_id = None
        profile = fields.get("profile", str)
        if profile not in profiles:
            raise fields.fail(f"release '{name}' names unknown profile '{profile}'")
        try:
            version = Version(fields.get("version", str))
        except InvalidVersion as error:
            raise fields.fail(f"release '{name}': {error}") from None
        fp = _Fields(fields.get("fingerprint", dict, {}), path)
        fingerprint = Fingerprint(
            present=fp.strings("present", []),
            absent=fp.strings("absent", []),
            contains=tuple(tuple(pair) for pair in fp.get("contains", list, [])),
            lacks=tuple(tuple(pair) for pair in fp.get("lacks", list, [])),
        )
        fp.done()
        nothing_to_port = fields.get("nothing_to_port", dict, {})
        known = {rule.id for rule in profiles[profile].rules}
        for rule_id, why in nothing_to_port.items():
            if rule_id not in known or not isinstance(why, str):
                raise fields.fail(
                    f"release '{name}': nothing_to_port needs a rule id of {profile} and a reason: {rule_id!r}"
                )
        facts = fields.get("facts", dict, None)
        releases.append(
            Release(
                name,
                profile,
                version,
                fields.get("repository", str),
                fields.get("commit", str),
                fingerprint,
                nothing_to_port,
                parse_facts(facts, path, name) if facts is not None else None,
                fields.get("date", str, None),
            )
        )
        fields.done()
    if data:
        raise RuleFileError(path, f"unknown top-level table(s): {', '.join(sorted(data))}")
    return releases
