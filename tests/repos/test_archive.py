"""Unpacking archives: hostile members are refused, nothing escapes the model directory."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.repos.servers import tar_gz
from tms_core.repos.archive import extract
from tms_core.repos.policy import RepositoryError


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = 0o644
    return info


def unpack(tmp_path: Path, data: bytes) -> Path:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(data)
    dest = tmp_path / "out"
    dest.mkdir()
    extract(archive, dest, max_bytes=1024 * 1024)
    return dest


def test_a_plain_archive_unpacks(tmp_path: Path) -> None:
    data = tar_gz(
        [
            (member("config.pbtxt"), b'name: "m"'),
            (member("1", tarfile.DIRTYPE), None),
            (member("1/model.py"), b"x = 1"),
            (member("1/alias.py", tarfile.SYMTYPE, "model.py"), None),
        ]
    )
    dest = unpack(tmp_path, data)
    assert (dest / "config.pbtxt").read_text() == 'name: "m"'
    assert (dest / "1" / "alias.py").read_text() == "x = 1"


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        ([(member("../evil.txt"), b"x")], "leads outside"),
        ([(member("1/../../evil.txt"), b"x")], "leads outside"),
        ([(member("/tmp/evil.txt"), b"x")], "absolute path"),
        ([(member("link", tarfile.SYMTYPE, "/etc/passwd"), None)], "absolute path"),
        ([(member("link", tarfile.SYMTYPE, "../../etc"), None)], "leads outside"),
        ([(member("hard", tarfile.LNKTYPE, "../outside"), None)], "leads outside"),
        ([(member("dev", tarfile.CHRTYPE), None)], "special file"),
        ([(member("fifo", tarfile.FIFOTYPE), None)], "special file"),
        (
            [
                (member("d", tarfile.SYMTYPE, "."), None),
                (member("e", tarfile.SYMTYPE, "d/../.."), None),
            ],
            "outside",
        ),
    ],
)
def test_hostile_tar_members_are_refused(
    tmp_path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]], problem: str
) -> None:
    with pytest.raises(RepositoryError, match=problem):
        unpack(tmp_path, tar_gz(entries))
    assert not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/evil.txt").exists()


def test_a_tar_over_the_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="size limit"):
        unpack(tmp_path, tar_gz([(member("big"), b"\0" * (2 * 1024 * 1024))]))


def zip_bytes(files: dict[str, bytes], *, link: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in files.items():
            zipped.writestr(name, data)
        if link:
            info = zipfile.ZipInfo("link")
            info.external_attr = 0o120777 << 16
            zipped.writestr(info, link)
    return buffer.getvalue()


def test_zip_archives_unpack_and_hostile_ones_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    dest = unpack(tmp_path / "a", zip_bytes({"config.pbtxt": b"x", "1/model.py": b"y"}))
    assert (dest / "1" / "model.py").read_bytes() == b"y"
    for name, data, problem in [
        ("b", zip_bytes({"../evil": b"x"}), "leads outside"),
        ("c", zip_bytes({"/abs": b"x"}), "absolute path"),
        ("d", zip_bytes({}, link="/etc/passwd"), "is a link"),
        # A zip bomb: small compressed, over the limit unpacked (its real size is counted).
        ("e", zip_bytes({"bomb": b"\0" * (3 * 1024 * 1024)}), "size limit"),
    ]:
        (tmp_path / name).mkdir()
        with pytest.raises(RepositoryError, match=problem):
            unpack(tmp_path / name, data)
