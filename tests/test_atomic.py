"""Tests of monosemantic.atomic: whole-file and whole-directory writes that a crash or an exception
cannot leave half done, permissions that follow the umask, and the clean-up of leftovers."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from monosemantic import atomic
from monosemantic.atomic import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---- single files ----------------------------------------------------------------------------


def test_write_creates_and_replaces_content_leaving_no_temporaries(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    atomic_write_text(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text() == "héllo"
    atomic_write_json(tmp_path / "j.json", {"a": [1, 2]})
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": [1, 2]}
    assert listing(tmp_path) == ["f.bin", "j.json", "t.txt"]


class _FailingFile:
    """A file object that writes a few bytes to `fd` and then fails, like a full disk."""

    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    def write(self, data: bytes):
        os.write(self.fd, data[:3])
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_failure_midway_keeps_the_old_file_and_removes_the_temporary(tmp_path, monkeypatch, failing):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old contents")

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if failing == "write":
        monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FailingFile(fd))
    else:
        monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new contents that never land")
    monkeypatch.undo()
    assert target.read_bytes() == b"old contents"
    assert listing(tmp_path) == ["f.bin"]


def test_keyboard_interrupt_midway_also_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["f.bin"]


def test_files_and_directories_follow_the_umask_not_0600(tmp_path):
    umask = current_umask()
    atomic_write_bytes(tmp_path / "f.bin", b"x")
    assert mode(tmp_path / "f.bin") == 0o666 & ~umask
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "inner").write_bytes(b"y")
    assert mode(tmp_path / "d") == 0o777 & ~umask


@pytest.mark.process
def test_permissions_follow_a_non_default_umask(tmp_path):
    # a fresh interpreter started under umask 027: files 0640, directories 0750 (mkstemp alone gives 0600/0700)
    code = (
        "import sys; from pathlib import Path; from monosemantic.atomic import atomic_write_bytes, atomic_directory\n"
        "root = Path(sys.argv[1]); atomic_write_bytes(root / 'f.bin', b'x')\n"
        "with atomic_directory(root / 'd') as tmp: (tmp / 'inner').write_bytes(b'y')\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, preexec_fn=lambda: os.umask(0o027))
    assert mode(tmp_path / "f.bin") == 0o640
    assert mode(tmp_path / "d") == 0o750


# ---- directories -----------------------------------------------------------------------------


def test_atomic_directory_creates_a_new_directory(tmp_path):
    target = tmp_path / "sub" / "ckpt"
    with atomic_directory(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        (tmp / "a.txt").write_text("a")
    assert listing(target) == ["a.txt"]
    assert listing(tmp_path / "sub") == ["ckpt"]


def test_atomic_directory_replaces_an_existing_directory_only_at_the_end(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert listing(target) == ["old.txt"]  # nothing visible until the block ends
    assert listing(target) == ["new.txt"]
    assert (target / "new.txt").read_text() == "new"
    assert listing(tmp_path) == ["ckpt"]  # neither the temporary nor the moved-aside old copy is left


def test_exception_inside_atomic_directory_leaves_the_old_one_untouched(tmp_path):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_directory(target) as tmp:
            (tmp / "partial.bin").write_bytes(b"\0" * 100)
            raise RuntimeError("half way")
    assert listing(target) == ["old.txt"]
    assert (target / "old.txt").read_text() == "old"
    assert listing(tmp_path) == ["ckpt"]


def test_failed_final_rename_keeps_the_old_directory(tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_replace, calls = os.replace, []

    def second_rename_fails(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", second_rename_fails)
    with pytest.raises(OSError):
        with atomic_directory(target) as tmp:
            (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert (target / "old.txt").read_text() == "old"


# ---- leftovers -------------------------------------------------------------------------------


def test_a_kill_between_the_two_renames_loses_nothing(tmp_path):
    """A SIGKILL right after the old directory was set aside (no handler runs) leaves only
    `.ckpt.old.tmp` and the new temp dir; cleanup must put the old one back, not delete it."""
    aside = tmp_path / ".ckpt.old.tmp"
    aside.mkdir()
    (aside / "old.txt").write_text("old")
    (tmp_path / ".ckpt.k3x9.tmp").mkdir()  # the replacement that never got renamed
    remove_stale_temporaries(tmp_path)
    assert (tmp_path / "ckpt" / "old.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_an_aside_copy_is_dropped_once_the_new_directory_is_in_place(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "new.txt").write_text("new")
    (tmp_path / ".ckpt.old.tmp").mkdir()
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert (tmp_path / "ckpt" / "new.txt").read_text() == "new"


def test_remove_stale_temporaries_deletes_only_dot_name_tmp_leftovers(tmp_path):
    (tmp_path / ".sae.safetensors.a1b2.tmp").write_bytes(b"partial")
    (tmp_path / ".step_000000300.xyz.tmp").mkdir()
    (tmp_path / ".step_000000300.xyz.tmp" / "sae.safetensors").write_bytes(b"partial")
    keep = ["step_000000200", "notes.tmp", ".hidden", ".config.tmp.json", "metrics.jsonl"]
    (tmp_path / "step_000000200").mkdir()
    (tmp_path / "step_000000200" / ".inner.abc.tmp").write_bytes(b"not at top level")
    for name in keep[1:]:
        (tmp_path / name).write_text(name)
    remove_stale_temporaries(tmp_path)
    assert listing(tmp_path) == sorted(keep)
    assert listing(tmp_path / "step_000000200") == [".inner.abc.tmp"]
    for name in keep[1:]:
        assert (tmp_path / name).read_text() == name


def test_remove_stale_temporaries_ignores_a_missing_directory(tmp_path):
    remove_stale_temporaries(tmp_path / "nope")
    assert listing(tmp_path) == []


def test_leftovers_of_a_real_interrupted_write_are_removed(tmp_path, monkeypatch):
    # the temporary name atomic_write_bytes really uses is one that remove_stale_temporaries removes
    def killed(*args):
        raise OSError("killed")

    monkeypatch.setattr(os, "unlink", lambda *a, **k: None)  # as if killed before the clean-up ran
    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "f.bin", b"data")
    monkeypatch.undo()
    [leftover] = listing(tmp_path)
    assert leftover.startswith(".f.bin.") and leftover.endswith(".tmp")
    remove_stale_temporaries(tmp_path)
    assert listing(tmp_path) == []


# ---- failed writes as one message ------------------------------------------------------------


@pytest.mark.parametrize(
    "code, advice", [(28, "free some space on that disk"), (27, "free some space"), (30, "make it writable")]
)
def test_a_failed_write_names_the_path_and_what_to_do(tmp_path, monkeypatch, code, advice):
    def fails(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", fails)
    with pytest.raises(atomic.WriteError) as e:
        atomic_write_bytes(tmp_path / "f.bin", b"data")
    with pytest.raises(atomic.WriteError) as d:
        with atomic_directory(tmp_path / "ckpt") as tmp:
            (tmp / "a").write_bytes(b"x")
    monkeypatch.undo()
    for error, path in ((e.value, tmp_path / "f.bin"), (d.value, tmp_path / "ckpt")):
        assert str(error).startswith(f"{path}: cannot write ({os.strerror(code)}): {advice}")
        assert isinstance(error, OSError) and error.errno == code
    assert listing(tmp_path) == []


def test_an_unreadable_input_inside_a_directory_write_is_not_called_a_write_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_directory(tmp_path / "ckpt"):
            (tmp_path / "missing").read_bytes()


@pytest.mark.parametrize("text", ["{not json", "[1]", "\xff\xfe", '{"format": "other/1"}'])
def test_a_garbage_manifest_is_one_error_saying_what_to_do(tmp_path, text):
    (tmp_path / "manifest.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=r"manifest.json: .*; delete it"):
        atomic.read_manifest_json(tmp_path / "manifest.json", "ours/1", ValueError, "missing", "delete it")
