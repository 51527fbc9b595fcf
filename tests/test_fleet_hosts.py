"""Fleet hosts on real engines (tests/fleet_engines.py): probing over tcp:// and ssh://, sending an image a
host lacks, `--hosts` parsing, `doctor --hosts`. The engines' facts are checked against the docker CLI's
own `docker -H ... info`, not against the SDK this code uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fleet_engines import FleetEngine
from tui_profiler.config.errors import PresetError
from tui_profiler.config.model import HostConfig
from tui_profiler.fleet.hosts import HostUnreachable, parse_hosts, probe_host, resolve_host
from tui_profiler.fleet.transfer import send_image

BASE = "tui-profiler-base:bookworm"


def cli_info(url: str) -> dict:  # type: ignore[type-arg]
    out = subprocess.run(
        ["docker", "-H", url, "info", "--format", "{{json .}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def probe(url: str, **settings: str):  # type: ignore[no-untyped-def]
    return probe_host(resolve_host(HostConfig(url=url, **settings)))


def assert_matches_cli(p, engine: FleetEngine) -> None:  # type: ignore[no-untyped-def]
    info = cli_info(engine.unix_url)  # the engine's own socket, beside the URL under test
    assert p.reachable, p.reason
    assert (
        (p.engine_id, p.data_root)
        == (info["ID"], info["DockerRootDir"])
        == (p.engine_id, str(engine.data_root))
    )
    assert p.engine_version == info["ServerVersion"]
    assert (p.ncpu, p.mem_total, p.kernel, p.arch) == (
        info["NCPU"],
        info["MemTotal"],
        info["KernelVersion"],
        info["Architecture"],
    )
    assert (p.cgroup_version, p.cgroup_driver) == (str(info["CgroupVersion"]), info["CgroupDriver"])
    for flag in ("CpuCfsQuota", "CPUSet", "MemoryLimit", "SwapLimit", "PidsLimit"):
        assert p.caps[flag] == info[flag], flag
    assert p.runtimes == tuple(sorted(info["Runtimes"]))


def test_probe_over_tcp_matches_engine_info(fleet_engines: list[FleetEngine], docker_client) -> None:  # type: ignore[no-untyped-def]
    main_root = docker_client.info()["DockerRootDir"]
    roots = set()
    for engine in fleet_engines:
        p = probe(engine.tcp_url)
        assert_matches_cli(p, engine)
        roots.add(p.data_root)
        facts = p.as_facts()
        assert facts["cpu_count"] == p.ncpu and facts["memory_bytes"] == p.mem_total
        assert facts["cgroup_version"] == f"v{p.cgroup_version}"
        json.dumps(facts)  # meta.json takes it as it is
    assert len(roots) == len(fleet_engines) and main_root not in roots  # each URL reached its own engine


def test_probe_over_ssh_matches_engine_info(fleet_engines: list[FleetEngine], fleet_ssh_home: Path) -> None:
    engine = fleet_engines[0]
    assert engine.ssh_url
    assert_matches_cli(probe(engine.ssh_url), engine)


def test_ssh_without_the_key_is_unreachable(
    fleet_engines: list[FleetEngine], tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh: no key, no known host
    p = probe(str(fleet_engines[0].ssh_url))
    assert not p.reachable and p.reason
    assert p.lacks() == [f"a reachable engine ({p.reason})"] and p.enforces() == []
    with pytest.raises(HostUnreachable, match="not reachable"):
        p.limits()


def test_limits_follow_the_cpuset(fleet_engines: list[FleetEngine]) -> None:
    engine = fleet_engines[0]
    ncpu = cli_info(engine.unix_url)["NCPU"]
    whole = probe(engine.tcp_url).limits()
    assert whole.cpus == ncpu and whole.gpus == 0 and "nvidia" in whole.gpu_reason
    one = probe(engine.tcp_url, cpuset="0")
    assert one.limits().cpus == 1
    assert not any("cpuset" in lack for lack in one.lacks())
    beyond = probe(engine.tcp_url, cpuset=f"0-{ncpu + 1}")
    assert beyond.limits().cpus == ncpu
    assert any(f"cores {ncpu},{ncpu + 1} do not exist" in lack for lack in beyond.lacks())


def test_send_image_save_load_counts_the_stream(fleet_engines: list[FleetEngine], docker_client) -> None:  # type: ignore[no-untyped-def]
    import docker.errors

    engine = fleet_engines[-1]  # the last engine: the lead's sweep tests use the first ones
    target = engine.client(timeout=300)
    try:
        target.images.remove(BASE, force=True)
    except docker.errors.ImageNotFound:
        pass
    with pytest.raises(docker.errors.ImageNotFound):
        target.images.get(BASE)
    lines: list[str] = []
    sent = send_image(docker_client, target, BASE, progress=lines.append)
    assert sent.how == "docker save -> load"
    with subprocess.Popen(["docker", "save", BASE], stdout=subprocess.PIPE) as save:
        assert save.stdout is not None
        cli_bytes = sum(len(chunk) for chunk in iter(lambda: save.stdout.read(1 << 20), b""))  # type: ignore[union-attr]
    assert save.returncode == 0
    assert sent.nbytes == cli_bytes
    assert sent.seconds is not None and sent.seconds > 0
    assert target.images.get(BASE).id == docker_client.images.get(BASE).id
    assert lines[-1].startswith(f"sent {BASE}")
    again = send_image(docker_client, target, BASE)
    assert (again.how, again.nbytes, again.seconds) == ("present", None, None)
    target.close()


def test_send_image_missing_on_source_is_one_line(fleet_engines: list[FleetEngine], docker_client) -> None:  # type: ignore[no-untyped-def]
    from tui_profiler.fleet.transfer import ImageTransferError

    with pytest.raises(ImageTransferError, match=r"^sending no-such-image:x: the source engine has no image"):
        send_image(docker_client, fleet_engines[0].client(), "no-such-image:x")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[[hosts]]\nurl = "tcp://a:2375"\ncpuset = "x"\n', "hosts.cpuset"),
        ('[[hosts]]\nurll = "tcp://a:2375"\n', "hosts.urll"),
        ('[fleet]\nmax_tries = 9\n[[fleet.hosts]]\nurl = "tcp://a:2375"\n', "fleet.max_tries"),
        ('[fleet]\n[[fleet.hosts]]\nurl = "no-such-context"\n', "fleet.hosts.url"),
        ("[fleet]\nhosts = []\n", "fleet.hosts"),
        ('[fleet]\nhosts = [{url = "tcp://a:1"}]\n[model]\nx = 1\n', "model"),
    ],
)
def test_parse_hosts_file_errors_name_the_field(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(body)
    with pytest.raises(PresetError) as err:
        parse_hosts(str(path))
    assert err.value.field == field
    assert str(err.value).startswith(f"{path}: {field}: ") and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("arg", "field"),
    [
        ("", "hosts"),
        ("tcp://a:1,,tcp://b:1", "hosts"),
        ("no-such-context", "hosts.url"),
        ("tcp://a:1,tcp://a:2", "hosts"),
    ],
)
def test_parse_hosts_list_errors_name_the_field(arg: str, field: str) -> None:
    with pytest.raises(PresetError) as err:
        parse_hosts(arg)
    assert err.value.field == field and str(err.value).startswith(f"--hosts: {field}: ")


def test_parse_hosts_list_and_file(tmp_path: Path) -> None:
    fleet = parse_hosts("tcp://10.213.1.2:2375, ssh://root@10.213.2.2,default")
    assert [h.url for h in fleet.hosts] == ["tcp://10.213.1.2:2375", "ssh://root@10.213.2.2", "default"]
    assert [h.label for h in fleet.hosts] == ["10.213.1.2", "10.213.2.2", "default"]
    assert resolve_host(fleet.hosts[2]).engine_url.startswith("unix://")  # the default context's endpoint
    path = tmp_path / "fleet.toml"
    path.write_text(
        'registry = "r:5000"\n[[hosts]]\nurl = "tcp://10.213.1.2:2375"\ncpuset = "0"\nhost_class = "c1"\n'
    )
    fleet = parse_hosts(str(path))
    assert fleet.registry == "r:5000" and fleet.hosts[0].cpuset == "0" and fleet.hosts[0].host_class == "c1"


def doctor(*hosts: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui_profiler", "doctor", "--hosts", ",".join(hosts)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(home)},
    )


def test_doctor_hosts_block_per_host_exit_1_when_unreachable(
    fleet_engines: list[FleetEngine], fleet_home: Path
) -> None:
    e1, e2, e3 = fleet_engines[:3]
    refused = f"tcp://{e3.address}:2399"  # inside e3's namespace, where nothing listens on 2399
    proc = doctor(e1.tcp_url, str(e2.ssh_url), refused, home=fleet_home)
    assert proc.returncode == 1, proc.stderr
    blocks = proc.stdout.strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [
        f"host {e1.address}: {e1.tcp_url}",
        f"host {e2.address}: {e2.ssh_url}",
        f"host {e3.address}: {refused}",
    ]
    version = cli_info(e1.unix_url)["ServerVersion"]
    for block in blocks[:2]:
        assert f"reachable: yes — Docker engine {version}" in block
        assert "enforces: cpus (CPU CFS quota)" in block and "lacks: " in block
    assert "reachable: no — " in blocks[2] and "Connection refused" in blocks[2]
    assert proc.stdout.rstrip().endswith("hosts: not every host is reachable")
    ok = doctor(e1.tcp_url, home=fleet_home)
    assert ok.returncode == 0 and ok.stdout.rstrip().endswith("hosts: all reachable")
