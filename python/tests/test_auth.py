"""The cluster token on a real cluster: refused when missing or wrong, found where documented."""

import pytest

from troupe import AuthenticationError, JobSubmissionClient


@pytest.fixture
def no_token_env(monkeypatch, tmp_path):
    """No token in the environment and no `troupe up` cluster to take one from."""
    for name in ("TROUPE_TOKEN", "TROUPE_TOKEN_FILE", "TROUPE_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TROUPE_HOME", str(tmp_path / "empty-home"))
    return tmp_path


def test_missing_token_is_refused_but_version_answers(cluster, no_token_env):
    with JobSubmissionClient(cluster.address) as client:
        assert client.get_version()
        with pytest.raises(AuthenticationError) as error:
            client.list_jobs()
    message = str(error.value)
    assert "token" in message and "TROUPE_TOKEN" in message and cluster.address in message


def test_wrong_token_is_refused(cluster, no_token_env):
    with JobSubmissionClient(cluster.address, token="not-the-token") as client:
        assert client.get_version()
        with pytest.raises(AuthenticationError, match="token"):
            client.submit_job("echo never")
        with pytest.raises(AuthenticationError):
            client.get_job_status("anything")


def test_token_from_env_file_and_troupe_home(cluster, no_token_env, monkeypatch):
    monkeypatch.setenv("TROUPE_ADDRESS", f"http://{cluster.address}")
    monkeypatch.setenv("TROUPE_TOKEN_FILE", str(cluster.data_dir / "token"))
    with JobSubmissionClient() as client:
        assert isinstance(client.list_jobs(), list)
    monkeypatch.delenv("TROUPE_TOKEN_FILE")
    home = no_token_env / "home"
    (home / "head").mkdir(parents=True)
    (home / "head" / "token").write_text(cluster.token + "\n")
    monkeypatch.setenv("TROUPE_HOME", str(home))
    with JobSubmissionClient() as client:
        assert isinstance(client.list_jobs(), list)
    monkeypatch.setenv("TROUPE_TOKEN", "wrong-but-first")
    with JobSubmissionClient() as client:
        with pytest.raises(AuthenticationError, match="TROUPE_TOKEN"):
            client.list_jobs()
