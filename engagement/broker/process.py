"""Small helpers about a detached process known only by its pid."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


def spawn_detached(command: list[str], log_file: Path) -> int:
    """Start ``command`` in a session of its own, output appended to ``log_file``.

    The new session keeps the process alive after its caller and terminal
    are gone, and away from their Ctrl-C. It is spawned directly rather than
    through subprocess.Popen, which would warn that its child outlived it;
    :func:`is_alive` reaps it instead.
    """
    stdin = os.open(os.devnull, os.O_RDONLY)
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return os.posix_spawn(
            command[0],
            command,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, stdin, 0),
                (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(stdin)
        os.close(log)


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (zombies count as exited)."""
    # When the broker is our own child, reaping it is the only way it can
    # disappear; a dead, unreaped child would otherwise look alive forever.
    with contextlib.suppress(ChildProcessError):
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # It exists but belongs to another user.
        return True

    # A zombie whose parent does not reap it (a container's init, for
    # example) still accepts signal 0, so ask /proc for its state.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z"


def command_line(pid: int) -> list[str] | None:
    """The arguments of process ``pid``, or None where /proc cannot tell."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def wait_for_exit(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` exited within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def write_pid(pid_file: Path, pid: int) -> None:
    # Written aside and renamed, so a reader never sees a half-written number.
    partial = pid_file.with_suffix(".tmp")
    partial.write_text(f"{pid}\n")
    partial.replace(pid_file)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file, or a note that it is empty."""
    try:
        with path.open("rb") as handle:
            # The end of a large log is all we need.
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return f"({path} could not be read)"

    last = text.strip().splitlines()[-lines:]
    return "\n".join(last) if last else f"({path} is empty)"
