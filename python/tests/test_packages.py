"""Malicious working-directory archives sent to a real head are refused, and nothing escapes."""

import uuid

import pytest

from helpers import make_archive
from troupe import TroupeError
from troupe.packaging import sha256_hex


def _evil_files(cluster):
    places = [cluster.root, cluster.root.parent, cluster.data_dir.parent, cluster.work_dir.parent]
    found = [str(place / "evil") for place in places if (place / "evil").exists()]
    found += [str(path) for path in cluster.root.rglob("evil*")]
    return found


def test_archive_with_parent_paths_is_refused(client, cluster):
    archive = make_archive(
        [
            {"name": "fine.txt", "data": uuid.uuid4().hex},
            {"name": "../evil", "data": "escaped"},
        ]
    )
    with pytest.raises(TroupeError, match=r"\.\./evil"):
        client.upload_package(archive)
    assert client.has_package(sha256_hex(archive)) is False
    assert _evil_files(cluster) == []


def test_archive_with_nested_parent_path_is_refused(client, cluster):
    archive = make_archive([{"name": "sub/../../evil-nested", "data": uuid.uuid4().hex}])
    with pytest.raises(TroupeError, match="evil-nested"):
        client.upload_package(archive)
    assert client.has_package(sha256_hex(archive)) is False
    assert _evil_files(cluster) == []


def test_archive_with_symlink_outside_is_refused(client):
    archive = make_archive(
        [
            {"name": "ok.txt", "data": uuid.uuid4().hex},
            {"name": "escape", "link": "/etc"},
        ]
    )
    with pytest.raises(TroupeError) as error:
        client.upload_package(archive)
    assert "escape" in str(error.value) or "/etc" in str(error.value)
    assert client.has_package(sha256_hex(archive)) is False


def test_chain_of_symlinks_leading_outside_is_refused(client):
    archive = make_archive(
        [
            {"name": "d/up", "link": ".."},
            {"name": "out", "link": "d/up/.."},
            {"name": "tag.txt", "data": uuid.uuid4().hex},
        ]
    )
    with pytest.raises(TroupeError, match="out"):
        client.upload_package(archive)
    assert client.has_package(sha256_hex(archive)) is False


def test_well_formed_archive_is_stored_under_its_hash(client):
    archive = make_archive([{"name": "dir/file.txt", "data": uuid.uuid4().hex}])
    digest = client.upload_package(archive)
    assert digest == sha256_hex(archive)
    assert client.has_package(digest) is True
