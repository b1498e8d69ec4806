"""Memory as a Managed Agent reads it: a store mounted as files, read through the agent's tools.

A Managed Agents session does not get its memory pasted into the system prompt: the store is
mounted as a directory (`resources[].mount_path`, e.g. /mnt/memory/support-memory), a note naming
the mount is added to the system prompt, and the agent reads the files with the agent toolset's
`read`, `glob` and `grep`. Replays of Managed Agents sessions (dreams/replay.py) do the same with
the replayed version's memory documents, so a hosted-dream proposal is judged the way it will run.
"""

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_MOUNT = "/mnt/memory/memory"
MAX_GREP_LINES = 200

# The agent toolset's read-only file tools (anthropic SDK: BetaManagedAgentsAgentToolset20260401
# ReadInput / GlobInput / GrepInput), declared as plain tools for a Messages API replay.
TOOLS: list[dict[str, Any]] = [
    {
        "name": "read",
        "description": "Read a file. Optional view_range [start_line, end_line], 1-indexed.",
        "input_schema": {
            "type": "object",
            "properties": {
                "file_path": {"type": "string"},
                "view_range": {"type": "array", "items": {"type": "integer"}},
            },
            "required": ["file_path"],
        },
    },
    {
        "name": "glob",
        "description": "Paths matching a doublestar glob pattern under an optional directory.",
        "input_schema": {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}},
            "required": ["pattern"],
        },
    },
    {
        "name": "grep",
        "description": "Lines matching a regular expression, as path:line:text.",
        "input_schema": {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}},
            "required": ["pattern"],
        },
    },
]
TOOL_NAMES = frozenset(t["name"] for t in TOOLS)


@dataclass(frozen=True)
class MemoryMount:
    """One mounted memory store, as the session recorded it."""

    path: str
    name: str = ""
    description: str = ""
    instructions: str = ""
    access: str = "read_write"

    def note(self) -> str:
        """The system-prompt note naming the mount (never the files' contents)."""
        lines = [
            f"A memory store is mounted at {self.path} ({self.access.replace('_', '-')})"
            + (f": {self.name}" if self.name else "")
            + "."
        ]
        if self.description:
            lines.append(self.description)
        if self.instructions:
            lines.append(self.instructions)
        lines.append("Read its files with the read, glob and grep tools before relying on them.")
        return "<memory_stores>\n" + "\n".join(lines) + "\n</memory_stores>"

    def file(self, document_path: str) -> str:
        return self.path.rstrip("/") + "/" + document_path.lstrip("/")

    def contains(self, path: str | None) -> bool:
        if not path:
            return False
        root = self.path.rstrip("/")
        return path == root or path.startswith(root + "/")


def mount_for_run(run: Any) -> MemoryMount | None:
    """The memory mount of a run recorded in a Managed Agents session, else None."""
    managed = (getattr(run, "metadata", None) or {}).get("managed")
    if not isinstance(managed, dict):
        return None
    for mount in managed.get("memory_mounts") or []:
        if isinstance(mount, dict) and mount.get("mount_path"):
            return MemoryMount(
                path=str(mount["mount_path"]),
                name=str(mount.get("name") or ""),
                description=str(mount.get("description") or ""),
                instructions=str(mount.get("instructions") or ""),
                access=str(mount.get("access") or "read_write"),
            )
    return MemoryMount(path=DEFAULT_MOUNT)


def mounts_of_session(session: dict[str, Any]) -> list[dict[str, Any]]:
    """The memory-store resources of a session (kept on the run for its replays)."""
    keep = ("memory_store_id", "mount_path", "name", "description", "instructions", "access")
    return [
        {k: r.get(k) for k in keep if r.get(k) is not None}
        for r in session.get("resources") or []
        if isinstance(r, dict) and r.get("type") == "memory_store"
    ]


def is_memory_call(mount: MemoryMount, name: str, arguments: dict[str, Any]) -> bool:
    """A read-only file tool call aimed at the mounted store."""
    if name not in TOOL_NAMES:
        return False
    target = arguments.get("file_path") if name == "read" else arguments.get("path")
    if name != "read" and not target:
        target = str(arguments.get("pattern") or "")
    return mount.contains(str(target or ""))


def _files(mount: MemoryMount, documents: dict[str, str]) -> dict[str, str]:
    return {mount.file(path): text for path, text in sorted(documents.items())}


def _glob_match(path: str, pattern: str) -> bool:
    # Doublestar: "**/" may match no directory at all; "*" stays inside one segment.
    regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
    regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.fullmatch(regex, path) is not None or fnmatch.fnmatchcase(path, pattern)


def answer(
    mount: MemoryMount, documents: dict[str, str], name: str, arguments: dict[str, Any]
) -> tuple[str, bool]:
    """(tool_result text, is_error) of a memory call, from the replayed version's documents."""
    files = _files(mount, documents)
    if name == "read":
        path = str(arguments.get("file_path") or "")
        if path not in files:
            return f"File not found: {path}", True
        lines = files[path].splitlines()
        view = arguments.get("view_range") or []
        if len(view) == 2:
            start = max(int(view[0]), 1)
            end = int(view[1]) if int(view[1]) > 0 else len(lines)
            lines = lines[start - 1 : end]
        return "\n".join(lines), False
    root = str(arguments.get("path") or mount.path).rstrip("/")
    under = {p: t for p, t in files.items() if p.startswith(root + "/")}
    if name == "glob":
        pattern = str(arguments.get("pattern") or "**")
        if not pattern.startswith("/"):
            pattern = root + "/" + pattern
        matched = [p for p in under if _glob_match(p, pattern)]
        return "\n".join(matched) if matched else "No files matched.", False
    try:
        regex = re.compile(str(arguments.get("pattern") or ""))
    except re.error as exc:
        return f"Invalid regular expression: {exc}", True
    hits = [
        f"{path}:{number}:{line}"
        for path, text in under.items()
        for number, line in enumerate(text.splitlines(), 1)
        if regex.search(line)
    ]
    return "\n".join(hits[:MAX_GREP_LINES]) if hits else "No matches.", False
