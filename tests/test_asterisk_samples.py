"""Checks of the sample Asterisk files: dialplan/, asterisk-conf/ and docker/.

No Asterisk runs on the build machines, so these tests parse the files with a small
reader of Asterisk's configuration syntax and walk the dialplan with a small
interpreter. The interpreter supports only the applications and functions that the
samples use, with the behaviour that the Asterisk 22 documentation gives them.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pbx_bridge.config import AriConfig, CallsConfig, RecordingConfig

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "asterisk-conf"
DIALPLAN_DIR = ROOT / "dialplan"
DOCKER_DIR = ROOT / "docker"
# An installed system keeps all of these in /etc/asterisk, so #include looks in both.
INCLUDE_DIRS = (CONF_DIR, DIALPLAN_DIR)
PLACEHOLDER_SECRET = "CHANGE-ME"


# --- Configuration reader -----------------------------------------------------------


@dataclass
class Section:
    """One [name] block of an Asterisk .conf file, options kept in file order."""

    name: str
    options: list[tuple[str, str]] = field(default_factory=list)

    def get(self, key: str) -> str | None:
        values = self.get_all(key)
        return values[-1] if values else None

    def get_all(self, key: str) -> list[str]:
        return [value for name, value in self.options if name == key]


def _strip_comment(line: str) -> str:
    # ";" starts a comment unless escaped as "\;".
    match = re.search(r"(?<!\\);", line)
    return line[: match.start()] if match else line


def read_conf(path: Path) -> list[Section]:
    """Parse an Asterisk .conf file into sections, following #include directives.

    Both "key = value" and "key => value" give (key, value). Template markers such as
    [name](!) are dropped from the section name.
    """
    sections: list[Section] = []
    current: Section | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = _strip_comment(raw).strip()
        if not line:
            continue

        if line.startswith("#include"):
            included = line.split(None, 1)[1].strip().strip('"')
            sections.extend(read_conf(_find_include(included)))
            current = None
            continue

        header = re.fullmatch(r"\[([^\]]+)\](\([^)]*\))?", line)
        if header:
            current = Section(header.group(1))
            sections.append(current)
            continue

        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: line without '=': {raw!r}"
        assert current is not None, f"{path.name}: option outside a section: {raw!r}"
        current.options.append((key.strip(), value.removeprefix(">").strip()))
    return sections


def _find_include(name: str) -> Path:
    for folder in INCLUDE_DIRS:
        if (folder / name).is_file():
            return folder / name
    raise AssertionError(f"#include {name!r} not found in {', '.join(map(str, INCLUDE_DIRS))}")


def sections_named(sections: list[Section], name: str) -> list[Section]:
    return [section for section in sections if section.name == name]


def only_section(sections: list[Section], name: str, section_type: str | None = None) -> Section:
    found = [
        section
        for section in sections_named(sections, name)
        if section_type is None or section.get("type") == section_type
    ]
    assert len(found) == 1, f"expected one [{name}] of type {section_type}, found {len(found)}"
    return found[0]


# --- Dialplan model -----------------------------------------------------------------


@dataclass
class Step:
    """One priority of an extension: `exten => NAME,PRIORITY(LABEL),APP(ARGS)`."""

    priority: int
    label: str | None
    app: str
    args: str


@dataclass
class Context:
    name: str
    extensions: dict[str, list[Step]] = field(default_factory=dict)
    includes: list[str] = field(default_factory=list)


SPECIAL_SECTIONS = ("general", "globals")


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split at separators outside (), [], {} and double quotes, as Asterisk splits arguments."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _parse_step(value: str, previous: Step | None) -> tuple[str | None, Step]:
    """Parse the right side of `exten =>` (with the extension) or `same =>` (without)."""
    fields = split_top_level(value)
    if previous is None:
        exten, priority_text, app_text = fields[0], fields[1], ",".join(fields[2:])
    else:
        exten, priority_text, app_text = None, fields[0], ",".join(fields[1:])

    label_match = re.fullmatch(r"(\w+)(?:\((\w[\w-]*)\))?", priority_text.strip())
    assert label_match, f"unreadable priority {priority_text!r} in {value!r}"
    number, label = label_match.groups()
    if number == "n":
        assert previous is not None, f"priority 'n' needs a previous priority: {value!r}"
        priority = previous.priority + 1
    else:
        priority = int(number)

    app_match = re.fullmatch(r"(\w+)(?:\((.*)\))?", app_text.strip(), re.DOTALL)
    assert app_match, f"unreadable application in {value!r}"
    app, args = app_match.group(1), app_match.group(2) or ""
    return exten, Step(priority, label, app, args)


def read_dialplan() -> tuple[dict[str, Context], dict[str, str]]:
    """Read extensions.conf with its includes into contexts and the [globals] variables."""
    contexts: dict[str, Context] = {}
    globals_: dict[str, str] = {}
    for section in read_conf(CONF_DIR / "extensions.conf"):
        if section.name == "globals":
            globals_.update(section.options)
            continue
        if section.name in SPECIAL_SECTIONS:
            continue
        assert section.name not in contexts, f"context [{section.name}] defined twice"
        context = contexts[section.name] = Context(section.name)

        last_exten: str | None = None
        for key, value in section.options:
            if key == "include":
                context.includes.append(value)
            elif key == "exten":
                exten, step = _parse_step(value, None)
                assert exten is not None
                last_exten = exten
                context.extensions.setdefault(exten, []).append(step)
            elif key == "same":
                assert last_exten is not None, f"[{section.name}]: 'same' before any 'exten'"
                steps = context.extensions[last_exten]
                _, step = _parse_step(value, steps[-1])
                steps.append(step)
            else:
                raise AssertionError(f"[{section.name}]: unexpected key {key!r}")
    return contexts, globals_


# --- Extension matching -------------------------------------------------------------


def _pattern_regex(pattern: str) -> str:
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        upper = char.upper()
        if upper == "X":
            parts.append("[0-9]")
        elif upper == "Z":
            parts.append("[1-9]")
        elif upper == "N":
            parts.append("[2-9]")
        elif char == ".":
            parts.append(".+")
        elif char == "!":
            parts.append(".*")
        elif char == "[":
            end = pattern.index("]", index)
            members = pattern[index + 1 : end]
            parts.append("[" + "".join("\\" + c if c in "\\^]" else c for c in members) + "]")
            index = end
        else:
            parts.append(re.escape(char))
        index += 1
    return "".join(parts)


def _pattern_specificity(pattern: str) -> tuple[int, ...]:
    """Sort key: per position the size of the character set, as Asterisk prefers narrow patterns."""
    sizes: list[int] = []
    index = 0
    while index < len(pattern):
        char = pattern[index].upper()
        if char == "[":
            end = pattern.index("]", index)
            members = pattern[index + 1 : end]
            size = 0
            for match in re.finditer(r"(.)-(.)|(.)", members):
                size += (ord(match.group(2)) - ord(match.group(1)) + 1) if match.group(1) else 1
            sizes.append(size)
            index = end
        else:
            sizes.append({"X": 10, "Z": 9, "N": 8, ".": 1000, "!": 1001}.get(char, 1))
        index += 1
    return tuple(sizes)


def match_extension(context: Context, exten: str) -> str | None:
    """Return the extension of `context` (not its includes) that Asterisk would pick for `exten`."""
    if exten in context.extensions:
        return exten
    candidates = [
        name
        for name in context.extensions
        if name.startswith("_") and re.fullmatch(_pattern_regex(name[1:]), exten)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda name: _pattern_specificity(name[1:]))


def find_extension(
    contexts: dict[str, Context], context_name: str, exten: str
) -> tuple[Context, str] | None:
    """Look `exten` up in a context, then in its includes in order, as Asterisk does."""
    context = contexts[context_name]
    name = match_extension(context, exten)
    if name is not None:
        return context, name
    for included in context.includes:
        found = find_extension(contexts, included, exten)
        if found is not None:
            return found
    return None


# --- Dialplan interpreter -----------------------------------------------------------

EPOCH = 1796411651  # 2026-12-04 19:14:11 UTC
UNIQUEID = "1796411651.26"
ASTSPOOLDIR = "/var/spool/asterisk"
MAX_STEPS = 100


@dataclass
class Call:
    """A channel walked through the dialplan. `apps` lists the applications it ran, arguments expanded."""

    variables: dict[str, str]
    app_results: dict[str, dict[str, str]]
    apps: list[tuple[str, str]] = field(default_factory=list)
    context: str = ""
    exten: str = ""

    def ran(self, app: str) -> list[str]:
        return [args for name, args in self.apps if name == app]


def _function(name: str, argument: str, call: Call) -> str:
    if name == "EXISTS":
        return "1" if argument else "0"
    if name == "CUT":
        variable, delimiter, field_number = split_top_level(argument)
        pieces = call.variables.get(variable, "").split(delimiter)
        number = int(field_number)
        return pieces[number - 1] if number <= len(pieces) else ""
    if name == "STRFTIME":
        epoch, zone, pattern = split_top_level(argument)
        assert zone == "UTC", f"STRFTIME zone {zone!r}: the samples format dates in UTC"
        moment = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        return moment.strftime(pattern)
    if name == "CALLERID":
        return call.variables.get(f"CALLERID({argument})", "")
    raise AssertionError(f"function {name}() is unknown to this test's interpreter")


def _variable(reference: str, call: Call) -> str:
    function = re.fullmatch(r"(\w+)\((.*)\)", reference)
    if function:
        return _function(function.group(1), function.group(2), call)
    name, _, offset = reference.partition(":")
    value = call.variables.get(name, "")
    return value[int(offset) :] if offset else value


def _evaluate(expression: str) -> str:
    comparison = re.fullmatch(r'\s*"(.*)"\s*(!=|=)\s*"(.*)"\s*', expression)
    if comparison:
        left, operator, right = comparison.groups()
        return "1" if (left == right) == (operator == "=") else "0"
    raise AssertionError(f"expression $[{expression}] is unknown to this test's interpreter")


def expand(text: str, call: Call) -> str:
    """Substitute ${...} and evaluate $[...], innermost first, like Asterisk before an app runs."""
    while True:
        match = re.search(r"\$([{\[])([^${}\[\]]*)[}\]]", text)
        if match is None:
            return text
        inner = match.group(2)
        value = _variable(inner, call) if match.group(1) == "{" else _evaluate(inner)
        text = text[: match.start()] + value + text[match.end() :]


def _jump(call: Call, target: str, contexts: dict[str, Context]) -> tuple[str, str, str]:
    parts = [part.strip() for part in target.split(",")]
    context, exten = call.context, call.exten
    if len(parts) == 3:
        context, exten, priority = parts
    elif len(parts) == 2:
        exten, priority = parts
    else:
        (priority,) = parts
    assert context in contexts, f"jump to a missing context {context!r}"
    return context, exten, priority


def run_call(
    contexts: dict[str, Context],
    globals_: dict[str, str],
    context: str,
    exten: str,
    variables: dict[str, str] | None = None,
    app_results: dict[str, dict[str, str]] | None = None,
) -> Call:
    """Walk a channel from `context`,`exten`,1 until it hangs up or runs out of priorities.

    `app_results` gives the channel variables an application sets, such as
    {"Stasis": {"STASISSTATUS": "FAILED"}}.
    """
    call = Call(
        variables={
            **globals_,
            "EPOCH": str(EPOCH),
            "UNIQUEID": UNIQUEID,
            "ASTSPOOLDIR": ASTSPOOLDIR,
            **(variables or {}),
        },
        app_results=app_results or {},
        context=context,
        exten=exten,
    )
    priority: str = "1"
    for _ in range(MAX_STEPS):
        found = find_extension(contexts, call.context, call.exten)
        if found is None and "i" in contexts[call.context].extensions:
            call.variables["INVALID_EXTEN"] = call.exten
            call.exten, priority = "i", "1"
            continue
        assert found is not None, f"no extension {call.exten!r} in [{call.context}]"
        owner, extension = found
        call.variables["EXTEN"] = call.exten
        steps = owner.extensions[extension]
        step = _step_at(steps, priority, owner.name, extension)
        if step is None:
            return call

        args = expand(step.args, call)
        call.apps.append((step.app, args))
        next_priority = str(step.priority + 1)
        if step.app == "Hangup":
            return call
        if step.app == "Set":
            name, _, value = args.partition("=")
            call.variables[name] = value
        elif step.app in ("Goto", "GotoIf"):
            target = args
            if step.app == "GotoIf":
                condition, _, branches = args.partition("?")
                if_true, _, if_false = branches.partition(":")
                target = if_true if condition.strip() not in ("", "0") else if_false
            if target:
                call.context, call.exten, next_priority = _jump(call, target, contexts)
        call.variables.update(call.app_results.get(step.app, {}))
        priority = next_priority
    raise AssertionError(f"the call ran more than {MAX_STEPS} priorities")


def _step_at(steps: list[Step], priority: str, context: str, exten: str) -> Step | None:
    if priority.isdigit():
        return next((step for step in steps if step.priority == int(priority)), None)
    step = next((step for step in steps if step.label == priority), None)
    assert step is not None, f"label {priority!r} not found in {exten}@{context}"
    return step


# --- Fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dialplan() -> tuple[dict[str, Context], dict[str, str]]:
    return read_dialplan()


@pytest.fixture(scope="module")
def contexts(dialplan) -> dict[str, Context]:
    return dialplan[0]


@pytest.fixture(scope="module")
def globals_(dialplan) -> dict[str, str]:
    return dialplan[1]


TRACKED = "74951110001"


# --- Inbound context and fail-safe ---------------------------------------------------


def test_inbound_hands_dialed_number_to_stasis(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-inbound", TRACKED,
                    app_results={"Stasis": {"STASISSTATUS": "SUCCESS"}})

    assert call.ran("Stasis") == [f"calltracking,{TRACKED}"]


def test_inbound_stasis_source_uses_exten_argument(contexts):
    extension = match_extension(contexts["calltracking-inbound"], TRACKED)
    steps = contexts["calltracking-inbound"].extensions[extension]
    stasis = [step.args for step in steps if step.app == "Stasis"]

    assert stasis == ["calltracking,${EXTEN}"]


def test_inbound_stasis_app_matches_ari_default(contexts):
    apps = {
        step.args.split(",")[0]
        for context in contexts.values()
        for steps in context.extensions.values()
        for step in steps
        if step.app == "Stasis"
    }

    assert apps == {AriConfig().app}


def test_inbound_accepts_plus_prefixed_number(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-inbound", "+" + TRACKED,
                    app_results={"Stasis": {"STASISSTATUS": "SUCCESS"}})

    assert call.ran("Stasis") == [f"calltracking,+{TRACKED}"]


def test_inbound_success_hangs_up_without_dial(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-inbound", TRACKED,
                    app_results={"Stasis": {"STASISSTATUS": "SUCCESS"}})

    assert call.ran("Dial") == []
    assert call.apps[-1][0] == "Hangup"


def test_inbound_failed_stasis_dials_default(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-inbound", TRACKED,
                    app_results={"Stasis": {"STASISSTATUS": "FAILED"}})

    destination = globals_["CT_DEFAULT_DESTINATION"]
    assert call.ran("Dial") == [f"{destination},{globals_['CT_RING_TIMEOUT']}"]
    assert call.apps[-1][0] == "Hangup"


def test_inbound_checks_stasisstatus_source(contexts):
    steps = contexts["calltracking-inbound"].extensions["_[+0-9]."]
    apps = [step.app for step in steps]
    after_stasis = steps[apps.index("Stasis") + 1]
    dials = [step.args for step in steps if step.app == "Dial"]

    assert after_stasis.app == "GotoIf"
    assert "${STASISSTATUS}" in after_stasis.args
    assert dials == ["${CT_DEFAULT_DESTINATION},${CT_RING_TIMEOUT}"]


def test_globals_define_default_destination(globals_):
    assert globals_["CT_DEFAULT_DESTINATION"].startswith("PJSIP/")
    assert int(globals_["CT_RING_TIMEOUT"]) > 0


# --- Fallback context ---------------------------------------------------------------


def test_fallback_context_matches_config_default(contexts):
    assert CallsConfig().fallback_context in contexts
    assert CallsConfig().fallback_context == "calltracking-fallback"


def test_fallback_dials_ct_destination(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-fallback", TRACKED,
                    variables={"CT_DESTINATION": "PJSIP/+74951234567@trunk"})

    assert call.ran("Dial") == [f"PJSIP/+74951234567@trunk,{globals_['CT_RING_TIMEOUT']}"]
    assert call.apps[-1][0] == "Hangup"


def test_fallback_without_destination_dials_default(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-fallback", TRACKED)

    assert call.ran("Dial") == [f"{globals_['CT_DEFAULT_DESTINATION']},{globals_['CT_RING_TIMEOUT']}"]


def test_fallback_non_number_extension_still_dials(contexts, globals_):
    # ARI "continue" without an extension keeps the channel's own, which may be "s".
    call = run_call(contexts, globals_, "calltracking-fallback", "s",
                    variables={"CT_DESTINATION": "PJSIP/office"})

    assert call.ran("Dial") == [f"PJSIP/office,{globals_['CT_RING_TIMEOUT']}"]
    assert call.variables["CT_DIALED"] == "s"


def test_fallback_dial_source_uses_ct_destination(contexts):
    dials = [
        step.args
        for steps in contexts["calltracking-fallback"].extensions.values()
        for step in steps
        if step.app == "Dial"
    ]

    assert dials == ["${CT_DESTINATION},${CT_RING_TIMEOUT}"]


def test_fallback_records_nothing_by_default(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-fallback", TRACKED)

    assert globals_["CT_FALLBACK_RECORDING"] == "no"
    assert call.ran("MixMonitor") == []


def test_fallback_recording_goes_to_recording_folder(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-fallback", TRACKED,
                    variables={"CT_FALLBACK_RECORDING": "yes"})

    expected = f"{RecordingConfig().folder}/calltracking/2026/12/04/{UNIQUEID}-fallback.wav,b"
    assert call.ran("MixMonitor") == [expected]
    assert [app for app, _ in call.apps].index("MixMonitor") < [app for app, _ in call.apps].index("Dial")


# --- QA context ---------------------------------------------------------------------


def test_qa_caller_answers_and_talks(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-qa", "caller")

    assert [app for app, _ in call.apps] == ["Answer", "Playback", "Wait", "Hangup"]
    assert call.ran("Wait") == [globals_["CT_QA_TALK_SECONDS"]]
    assert int(globals_["CT_QA_TALK_SECONDS"]) >= 20


def test_qa_star77_calls_inbound_with_qa_caller(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-qa", "*77" + TRACKED,
                    app_results={"Stasis": {"STASISSTATUS": "SUCCESS"}})

    assert call.ran("Stasis") == [f"calltracking,{TRACKED}"]
    assert call.variables["CALLERID(all)"] == f'"QA" <{globals_["CT_QA_CALLER_ID"]}>'


def test_qa_star78_sets_chosen_caller(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-qa", f"*7879161234567*{TRACKED}",
                    app_results={"Stasis": {"STASISSTATUS": "SUCCESS"}})

    assert call.ran("Stasis") == [f"calltracking,{TRACKED}"]
    assert call.variables["CALLERID(all)"] == '"QA" <79161234567>'


def test_qa_star78_without_number_hangs_up(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-qa", "*7879161234567")

    assert call.ran("Stasis") == []
    assert call.apps[-1][0] == "Hangup"


def test_office_phone_reaches_qa_extensions(contexts, globals_):
    call = run_call(contexts, globals_, "from-office", "*77" + TRACKED,
                    app_results={"Stasis": {"STASISSTATUS": "SUCCESS"}})

    assert call.ran("Stasis") == [f"calltracking,{TRACKED}"]


def test_qa_contexts_match_test_call(contexts):
    from pbx_bridge.calls import qa

    assert qa.INBOUND_CONTEXT == "calltracking-inbound"
    assert find_extension(contexts, qa.QA_CONTEXT, qa.QA_EXTENSION) is not None
    assert find_extension(contexts, qa.INBOUND_CONTEXT, TRACKED) is not None


# --- AGI context --------------------------------------------------------------------


def test_agi_uses_loopback_fastagi(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-agi", TRACKED,
                    app_results={"AGI": {"AGISTATUS": "FAILURE"}})

    assert call.ran("AGI") == [f"agi://127.0.0.1:4573/calltracking,{TRACKED}"]


def test_agi_failure_dials_default(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-agi", TRACKED,
                    app_results={"AGI": {"AGISTATUS": "FAILURE"}})

    assert call.ran("Dial") == [f"{globals_['CT_DEFAULT_DESTINATION']},{globals_['CT_RING_TIMEOUT']}"]


def test_agi_success_dials_chosen_destination(contexts, globals_):
    call = run_call(contexts, globals_, "calltracking-agi", TRACKED,
                    app_results={"AGI": {"AGISTATUS": "SUCCESS", "CT_DESTINATION": "PJSIP/office"}})

    assert call.ran("Dial") == [f"PJSIP/office,{globals_['CT_RING_TIMEOUT']}"]


# --- Trunk and office contexts ------------------------------------------------------


def test_trunk_sends_tracked_number_to_stasis(contexts, globals_):
    call = run_call(contexts, globals_, "from-trunk", TRACKED,
                    app_results={"Stasis": {"STASISSTATUS": "SUCCESS"}})

    assert call.ran("Stasis") == [f"calltracking,{TRACKED}"]


def test_trunk_untracked_number_dials_office(contexts, globals_):
    call = run_call(contexts, globals_, "from-trunk", "74957770000")

    assert call.ran("Stasis") == []
    assert call.ran("Dial") == [f"{globals_['CT_DEFAULT_DESTINATION']},{globals_['CT_RING_TIMEOUT']}"]


def test_office_dials_russian_number_via_trunk(contexts, globals_):
    call = run_call(contexts, globals_, "from-office", "84951234567")

    assert call.ran("Dial") == ["PJSIP/84951234567@trunk,60"]


def test_office_cannot_dial_international(contexts):
    assert find_extension(contexts, "from-office", "0014155550123") is None
    assert find_extension(contexts, "from-office", "+14155550123") is None


# --- Dialplan consistency -----------------------------------------------------------


def _all_steps(contexts: dict[str, Context]):
    for context in contexts.values():
        for exten, steps in context.extensions.items():
            for step in steps:
                yield context, exten, steps, step


def test_dialplan_has_required_contexts(contexts):
    required = {
        "from-trunk", "from-office", "calltracking-inbound",
        "calltracking-fallback", "calltracking-qa", "calltracking-agi",
    }

    assert required <= set(contexts)


def test_included_contexts_exist(contexts):
    missing = [
        (context.name, included)
        for context in contexts.values()
        for included in context.includes
        if included not in contexts
    ]

    assert missing == []


def test_goto_targets_exist(contexts):
    missing: list[str] = []
    for context, exten, steps, step in _all_steps(contexts):
        if step.app not in ("Goto", "GotoIf"):
            continue
        targets = [step.args]
        if step.app == "GotoIf":
            branches = step.args.split("?", 1)[1]
            targets = [target for target in branches.split(":") if target]
        for target in targets:
            parts = split_top_level(target)
            target_context = parts[0] if len(parts) == 3 else context.name
            if target_context not in contexts:
                missing.append(f"{context.name}/{exten}: context {target_context}")
                continue
            target_exten = parts[-2] if len(parts) >= 2 else exten
            priority = parts[-1]
            if "$" in target_exten:
                continue
            found = find_extension(contexts, target_context, target_exten)
            if found is None:
                missing.append(f"{context.name}/{exten}: extension {target_exten}@{target_context}")
                continue
            target_steps = found[0].extensions[found[1]]
            if not priority.isdigit() and priority not in {s.label for s in target_steps}:
                missing.append(f"{context.name}/{exten}: label {priority}")

    assert missing == []


def test_priorities_start_at_one_and_increase(contexts):
    broken = [
        f"{context.name}/{exten}"
        for context in contexts.values()
        for exten, steps in context.extensions.items()
        if [step.priority for step in steps] != list(range(1, len(steps) + 1))
    ]

    assert broken == []


def test_ct_variables_are_defined(contexts, globals_):
    # CT_DESTINATION comes from pbx-bridge (ARI) or a FastAGI handler; the rest from the dialplan.
    set_in_dialplan = {
        step.args.partition("=")[0] for _, _, _, step in _all_steps(contexts) if step.app == "Set"
    }
    known = set(globals_) | set_in_dialplan | {"CT_DESTINATION"}
    used = {
        name
        for _, _, _, step in _all_steps(contexts)
        for name in re.findall(r"\$\{(CT_\w+)", step.args)
    }

    assert used - known == set()


def test_no_catch_all_pattern(contexts):
    # "_." and "_!" also match h, i and t, which breaks hangup handling.
    broad = [
        f"{context.name}/{exten}"
        for context in contexts.values()
        for exten in context.extensions
        if exten in ("_.", "_!")
    ]

    assert broad == []


# --- HTTP, ARI and AMI --------------------------------------------------------------


def test_http_binds_ari_default_url():
    general = only_section(read_conf(CONF_DIR / "http.conf"), "general")

    assert general.get("enabled") == "yes"
    assert f"http://{general.get('bindaddr')}:{general.get('bindport')}" == AriConfig().url
    assert general.get("prefix") is None


def test_ari_enabled():
    general = only_section(read_conf(CONF_DIR / "ari.conf"), "general")

    assert general.get("enabled") == "yes"


def test_ari_user_matches_config_default():
    user = only_section(read_conf(CONF_DIR / "ari.conf"), AriConfig().username)

    assert user.get("type") == "user"
    assert user.get("read_only") == "no"
    assert user.get("password") == PLACEHOLDER_SECRET


def test_manager_disabled_on_loopback():
    sections = read_conf(CONF_DIR / "manager.conf")
    general = only_section(sections, "general")
    user = only_section(sections, "pbx-bridge")

    assert general.get("enabled") == "no"
    assert general.get("bindaddr") == "127.0.0.1"
    assert user.get_all("deny") == ["0.0.0.0/0.0.0.0"]
    assert user.get_all("permit") == ["127.0.0.1/255.255.255.255"]
    assert user.get("write") == ""


@pytest.mark.parametrize("name", ["ari.conf", "manager.conf", "pjsip.conf"])
def test_secrets_are_placeholders(name):
    secrets = [
        (section.name, key, value)
        for section in read_conf(CONF_DIR / name)
        for key, value in section.options
        if key in ("password", "secret")
    ]

    assert secrets, f"{name} has no secret to check"
    assert {value for _, _, value in secrets} == {PLACEHOLDER_SECRET}


# --- PJSIP --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pjsip() -> list[Section]:
    return read_conf(CONF_DIR / "pjsip.conf")


def test_pjsip_transports_bind_loopback(pjsip):
    binds = [section.get("bind") for section in pjsip if section.get("type") == "transport"]

    assert binds == ["127.0.0.1:5060"]


def test_pjsip_endpoint_contexts_exist(pjsip, contexts):
    endpoint_contexts = {
        section.name: section.get("context") for section in pjsip if section.get("type") == "endpoint"
    }

    assert endpoint_contexts == {
        "trunk": "from-trunk",
        "office": "from-office",
        "qa": "calltracking-qa",
    }
    assert set(endpoint_contexts.values()) <= set(contexts)


def test_pjsip_endpoint_references_exist(pjsip):
    kinds = {"aors": "aor", "auth": "auth", "outbound_auth": "auth", "transport": "transport"}
    missing: list[str] = []
    for endpoint in (section for section in pjsip if section.get("type") == "endpoint"):
        for option, kind in kinds.items():
            for value in endpoint.get_all(option):
                for name in value.split(","):
                    if not any(s.name == name.strip() and s.get("type") == kind for s in pjsip):
                        missing.append(f"{endpoint.name}.{option} -> {name} ({kind})")

    assert missing == []


def test_pjsip_office_accepts_registration(pjsip):
    endpoint = only_section(pjsip, "office", "endpoint")
    aor = only_section(pjsip, "office", "aor")

    assert endpoint.get("auth") == "office"
    assert int(aor.get("max_contacts")) >= 1


def test_pjsip_trunk_contact_never_resolves(pjsip):
    aor = only_section(pjsip, "trunk", "aor")
    host = re.fullmatch(r"sip:([^:;]+)(:\d+)?", aor.get("contact")).group(1)

    assert host.endswith(".invalid")
    assert aor.get("qualify_frequency") == "0"


def test_pjsip_provider_sections_stay_commented(pjsip):
    active = {section.get("type") for section in pjsip}

    assert "registration" not in active
    assert "identify" not in active


def test_pjsip_media_passes_through_asterisk(pjsip):
    endpoints = [section for section in pjsip if section.get("type") == "endpoint"]

    assert {endpoint.get("direct_media") for endpoint in endpoints} == {"no"}


# --- Docker -------------------------------------------------------------------------


def test_dockerfile_runs_serve_on_python311():
    text = (DOCKER_DIR / "Dockerfile").read_text(encoding="utf-8")

    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert re.search(r"^RUN pip install .*\.$", text, re.MULTILINE)
    assert 'CMD ["pbx-bridge", "serve"]' in text
    assert re.search(r"^USER ", text, re.MULTILINE)


def test_dockerfile_copies_existing_paths():
    text = (DOCKER_DIR / "Dockerfile").read_text(encoding="utf-8")
    sources = [
        source
        for line in re.findall(r"^COPY (.+)$", text, re.MULTILINE)
        for source in line.split()[:-1]
        if "*" not in source
    ]

    assert sources
    assert [source for source in sources if not (ROOT / source).exists()] == []


def test_compose_mounts_existing_files():
    text = (DOCKER_DIR / "compose.yaml").read_text(encoding="utf-8")
    mounts = re.findall(r"- (\.\./[^:]+):", text)

    assert len(mounts) == 6
    assert [mount for mount in mounts if not (DOCKER_DIR / mount).is_file()] == []


def test_compose_defines_three_services():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DOCKER_DIR / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]

    assert set(services) == {"asterisk", "postgres", "pbx-bridge"}
    assert services["postgres"]["image"] == "postgres:16"
    assert services["pbx-bridge"]["build"]["dockerfile"] == "docker/Dockerfile"
    assert services["pbx-bridge"]["environment"]["PBX_BRIDGE_ARI_URL"] == AriConfig().url
    assert services["pbx-bridge"]["environment"]["PBX_BRIDGE_ARI_USERNAME"] == AriConfig().username
