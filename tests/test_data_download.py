"""The download path, for real, against an HTTP server on 127.0.0.1 serving copies of a shared data file."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

import data
from data import sources
from data.sources import DataFileError
from tests.local_server import serve

KEY = "lsat/law_school_cf_test.csv"


@pytest.fixture()
def server(tmp_path, data_dir):
    """Serves ``good/`` (an exact copy) and ``bad/`` (one byte changed) over HTTP on an ephemeral local port."""
    root = tmp_path / "www"
    for sub in ("good", "bad"):
        (root / sub).mkdir(parents=True)
        shutil.copy(data_dir / KEY, root / sub / "law_school_cf_test.csv")
    corrupt = bytearray((root / "bad" / "law_school_cf_test.csv").read_bytes())
    corrupt[100] ^= 1
    (root / "bad" / "law_school_cf_test.csv").write_bytes(bytes(corrupt))
    with serve(root) as url:
        yield url


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """No $CLUE_DATA_DIR and an empty cache, so that fetch() must download."""
    monkeypatch.delenv("CLUE_DATA_DIR", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("CLUE_CACHE_DIR", str(cache))
    return cache


def _point_at(monkeypatch, *urls):
    original = sources.SOURCES[KEY]
    monkeypatch.setitem(sources.SOURCES, KEY, sources.Source(original.folder, original.filename, original.sha256,
                                                             tuple(urls), original.size))


def test_good_download_is_verified_and_cached(server, isolated, monkeypatch, data_dir):
    _point_at(monkeypatch, f"{server}/good/law_school_cf_test.csv")
    path = sources.fetch(KEY)
    assert path == isolated / KEY
    assert sources.sha256_of(path) == sources.SOURCES[KEY].sha256
    assert [p.name for p in (isolated / "lsat").iterdir()] == ["law_school_cf_test.csv"]  # no temporary left
    # The cached file is used next time without the network.
    _point_at(monkeypatch, "http://127.0.0.1:9/unreachable")
    assert sources.fetch(KEY) == path


def test_corrupted_download_is_refused_and_leaves_nothing(server, isolated, monkeypatch):
    _point_at(monkeypatch, f"{server}/bad/law_school_cf_test.csv")
    with pytest.raises(DataFileError) as info:
        sources.fetch(KEY)
    message = str(info.value)
    for expected in ("sha256 mismatch", KEY, sources.SOURCES[KEY].sha256, "CLUE_DATA_DIR"):  # common.io's wording
        assert expected in message
    assert not any(isolated.rglob("*"))


def test_falls_back_to_the_next_mirror(server, isolated, monkeypatch):
    _point_at(monkeypatch, f"{server}/bad/law_school_cf_test.csv", f"{server}/good/law_school_cf_test.csv")
    assert sources.sha256_of(sources.fetch(KEY)) == sources.SOURCES[KEY].sha256


def test_offline_error_says_how_to_provide_the_file(isolated, monkeypatch):
    _point_at(monkeypatch, "http://127.0.0.1:9/law_school_cf_test.csv")  # port 9: nothing listens
    with pytest.raises(DataFileError, match=r"(?s)could not obtain lsat/law_school_cf_test.csv.*url:.*sha256:.*"
                                            r"CLUE_DATA_DIR.*data_dir"):
        sources.fetch(KEY)
    assert not any(isolated.rglob("*"))


def test_whole_dataset_loads_through_the_cache(server, isolated, monkeypatch, data_dir):
    """data.load() finds the train file in data_dir and downloads the test file into the cache."""
    _point_at(monkeypatch, f"{server}/good/law_school_cf_test.csv")
    partial = isolated.parent / "partial" / "lsat"
    partial.mkdir(parents=True)
    shutil.copy(data_dir / "lsat" / "law_school_cf_train.csv", partial)
    d = data.load("lsat", data_dir=partial.parent)
    assert d.x_test.shape == (4358, 12)
    np.testing.assert_array_equal(d.x_test, data.load("lsat", data_dir=data_dir).x_test)


def test_cut_short_download_is_refused_even_without_a_checksum(tmp_path, isolated, monkeypatch):
    """A server that announces more bytes than it sends: urllib returns the short body without raising."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve_half():
        conn, _ = listener.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n" + b"x" * 500)
        conn.close()

    thread = threading.Thread(target=serve_half, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/file"
    key = "credit/default of credit card clients.xls"  # the one source with no recorded checksum
    original = sources.SOURCES[key]
    monkeypatch.setitem(sources.SOURCES, key, sources.Source(original.folder, original.filename, None, (url,)))
    with pytest.raises(DataFileError, match="cut short: the connection closed after 500 of 1000 bytes"):
        sources.fetch(key)
    thread.join(timeout=5)
    listener.close()
    assert not isolated.exists() or not any(isolated.rglob("*"))
