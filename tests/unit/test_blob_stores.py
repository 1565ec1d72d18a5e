"""The long-term tier's blob stores, each against the real thing: a folder, and SeaweedFS
over S3 (started by the tests)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.config.settings import load_settings
from bridge.storage.blobs.factory import open_longterm_store, open_store
from bridge.storage.blobs.file_store import FileBlobStore
from bridge.storage.blobs.protocol import BlobMissing, BlobStore, StoreUnavailable
from bridge.storage.blobs.s3_store import MULTIPART_BYTES, S3BlobStore
from tests.peer_process import free_port
from tests.seaweed_peer import SeaweedPeer, s3_peer  # noqa: F401 (fixture)

ARCHIVE_PATH = "01/1.2.3.4.01/1.2.3.4.5/1.2.3.4.5.6.abc123.dcm"


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[BlobStore]:
    if request.param == "file":
        (tmp_path / "longterm").mkdir()
        yield FileBlobStore(tmp_path / "longterm")
        return
    peer: SeaweedPeer = request.getfixturevalue("s3_peer")
    for name, value in peer.env().items():
        monkeypatch.setenv(name, value)
    bucket, prefix = peer.new_prefix()
    yield S3BlobStore(bucket=bucket, prefix=f"{prefix}/archive", endpoint_url=peer.endpoint_url)


def _file(tmp_path: Path, size: int, name: str = "source.dcm") -> tuple[Path, str]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_put_then_read_back_verify_head_list_delete(store: BlobStore, tmp_path: Path) -> None:
    source, digest = _file(tmp_path, 300_000)
    key = store.key_for(ARCHIVE_PATH)
    assert key.endswith(ARCHIVE_PATH)

    assert store.put(source, key) == 300_000
    assert store.size(key) == 300_000
    assert store.sha256(key) == digest
    out = io.BytesIO()
    assert store.fetch(key, out) == digest
    assert out.getvalue() == source.read_bytes()
    assert list(store.keys()) == [key]

    # Putting the same key again replaces the object: still one.
    assert store.put(source, key) == 300_000
    assert list(store.keys()) == [key]

    store.delete(key)
    assert store.size(key) is None
    assert list(store.keys()) == []
    store.delete(key)  # already gone: nothing happens


def test_a_missing_object_is_missing_not_an_outage(store: BlobStore) -> None:
    key = store.key_for("00/none.dcm")
    assert store.size(key) is None
    with pytest.raises(BlobMissing):
        store.sha256(key)
    with pytest.raises(BlobMissing):
        store.fetch(key, io.BytesIO())


def test_keys_cannot_leave_the_prefix(store: BlobStore) -> None:
    for bad in ("../etc/passwd", "/abs/path.dcm", "a/./b.dcm", "a//b.dcm", ""):
        with pytest.raises(ValueError):
            store.key_for(bad)


def test_a_large_file_goes_up_in_parts_and_reads_back_intact(store: BlobStore,
                                                               tmp_path: Path) -> None:
    source, digest = _file(tmp_path, MULTIPART_BYTES + 3 * 1024 * 1024 + 17)
    key = store.key_for("00/big/multiframe.dcm")
    store.put(source, key)
    assert store.sha256(key) == digest
    assert store.size(key) == source.stat().st_size


def test_s3_store_that_is_down_fails_fast_and_clearly(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    port = free_port()  # nothing listens there
    down = S3BlobStore(bucket="longterm", endpoint_url=f"http://127.0.0.1:{port}",
                       max_attempts=2)
    source, _ = _file(tmp_path, 1000)
    for action in (down.check, lambda: down.put(source, "k.dcm"),
                   lambda: down.sha256("k.dcm"), lambda: down.size("k.dcm")):
        with pytest.raises(StoreUnavailable) as caught:
            action()
        assert f"127.0.0.1:{port}" in str(caught.value)


def test_s3_wrong_credentials_are_an_outage_without_secrets_in_the_message(
        s3_peer: SeaweedPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    bucket, prefix = s3_peer.new_prefix()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "intruder")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = S3BlobStore(bucket=bucket, prefix=prefix, endpoint_url=s3_peer.endpoint_url)
    source, _ = _file(tmp_path, 1000)
    with pytest.raises(StoreUnavailable) as caught:
        store.put(source, store.key_for("k.dcm"))
    assert "not-the-secret" not in str(caught.value)
    with pytest.raises(StoreUnavailable):
        store.check()
    assert s3_peer.keys(bucket, prefix) == []


def test_file_store_whose_folder_is_away_refuses_to_write(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "nas-mount")
    source, _ = _file(tmp_path, 10)
    with pytest.raises(StoreUnavailable):
        store.put(source, "a/b.dcm")
    assert not (tmp_path / "nas-mount").exists()


def test_file_store_cleans_a_killed_put_and_never_lists_it(tmp_path: Path) -> None:
    root = tmp_path / "longterm"
    (root / "a").mkdir(parents=True)
    leftover = root / "a" / ".b.dcm.1234abcd.part"  # what a kill -9 mid-copy leaves
    leftover.write_bytes(b"half")
    store = FileBlobStore(root)
    assert list(store.keys()) == []
    source, digest = _file(tmp_path, 5000)
    store.put(source, "a/b.dcm")
    assert not leftover.exists()
    assert list(store.keys()) == ["a/b.dcm"]
    assert store.sha256("a/b.dcm") == digest


def test_the_tier_url_chooses_the_backend(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path / "var"}
    assert open_longterm_store(load_settings(**base)) is None
    file_store = open_longterm_store(load_settings(**base,
                                                   longterm_url=f"file://{tmp_path}/lt"))
    assert isinstance(file_store, FileBlobStore)
    assert file_store.location == f"file://{tmp_path}/lt"
    s3 = open_store("s3://bucket-a/some/prefix", load_settings(
        **base, s3_endpoint_url="http://127.0.0.1:9"))
    assert isinstance(s3, S3BlobStore)
    assert (s3.bucket, s3.location) == ("bucket-a", "s3://bucket-a/some/prefix")
    assert s3.key_for("01/x.dcm") == "some/prefix/01/x.dcm"
