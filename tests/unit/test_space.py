"""A refused write (full disk, file-size limit) is recognised wherever it surfaced, and said in
one line; native stderr goes to its log while ``sys.stderr`` stays on the terminal.

The whole path (a real full filesystem under a running pipeline) is
tests/integration/test_disk_full.py; these are the cases it cannot reach cheaply: a file-size
limit on a machine that allows mounting, and errors nested as causes.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ecomstream.errors import EcomstreamError
from ecomstream.jobs import space


def refused_write(tmp_path: Path, limit: int) -> OSError:
    """The OSError of a real write past a file-size limit, in a child process (CPython ignores
    SIGXFSZ, so the write fails with EFBIG)."""
    code = textwrap.dedent(
        f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.RLIM_INFINITY))
        try:
            with open({str(tmp_path / "big")!r}, "wb", buffering=0) as f:
                f.write(b"x" * {limit * 4})
                f.write(b"x")
        except OSError as exc:
            print(exc.errno, exc.strerror, sep="|")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    number, _, text = out.stdout.strip().partition("|")
    return OSError(int(number), text)


def test_each_surface_of_a_full_disk_is_recognised():
    java = "java.io.IOException: No space left on device"
    delta_rs = (
        "An exception was raised by the Python Proxy. Return Message: Traceback (most recent "
        'call last):\n  File "batch.py", line 1, in process\n_internal.DeltaError: Failed to '
        "parse parquet: External: Generic LocalFileSystem error: Unable to copy data to file: "
        "No space left on device (os error 28)"
    )
    assert space.out_of_space(java) == "no space"
    assert space.out_of_space(delta_rs) == "no space"
    assert space.out_of_space(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) == "no space"
    assert space.out_of_space("Kafka broker unreachable") is None
    # a failed batch's message may quote a payload: an errno name inside a word is not one
    assert space.out_of_space("malformed record 'q8EFBIGz0enospcx'") is None


def test_a_file_size_limit_is_said_as_such(tmp_path: Path):
    error = refused_write(tmp_path, 4096)
    assert error.errno == errno.EFBIG
    assert space.out_of_space(error) == "too large"
    with pytest.raises(EcomstreamError) as raised:
        space.raise_if_full(error, space.state_root(str(tmp_path / "_checkpoints" / "medallion")))
    assert str(raised.value).startswith(f"a file under {tmp_path} exceeds this process's file")
    assert raised.value.exit_code == 1
    assert "\n" not in str(raised.value)


def test_a_full_disk_behind_another_error_is_found():
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as inner:
            raise RuntimeError("the batch failed") from inner
    except RuntimeError as outer:
        error = outer
    assert space.out_of_space(error) == "no space"
    with pytest.raises(EcomstreamError, match=r"^no space left on device under /d:"):
        space.raise_if_full(error, "/d")
    space.raise_if_full(RuntimeError("the batch failed"), "/d")  # not a full disk: no error


def test_native_stderr_goes_to_its_log_and_sys_stderr_to_the_terminal(tmp_path: Path):
    log = tmp_path / "logs" / "native.log"
    code = textwrap.dedent(
        f"""
        import os, sys
        from pathlib import Path
        from ecomstream.native_output import native_stderr_to

        with native_stderr_to(Path({str(log)!r})):
            os.write(2, b"a native panic\\n")
            print("one clear line", file=sys.stderr)
        print("after the block", file=sys.stderr)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["one clear line", "after the block"]
    assert log.read_text() == "a native panic\n"
