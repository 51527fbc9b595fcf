"""`tui_profiler.cgroups` and the container hardening, without Docker: fake v1 and v2 cgroup trees in
tmp_path, and the real /sys/fs/cgroup where this machine has one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tui_profiler import cgroups
from tui_profiler.cgroups import (
    CPU_TOLERANCE_CORES,
    MEMORY_TOLERANCE_BYTES,
    V1_UNLIMITED,
    CgroupPaths,
    affinity_cores,
    cgroup_label,
    cgroup_version,
    confirm_caps,
    cpuset_cores,
    cpuset_text,
    own_cgroup,
    pinned_cores,
    read_cpu_limit,
    read_cpuset,
    read_memory_limit,
    v1_mounts,
)
from tui_profiler.runtime.base import EnforcedCaps, TargetFailed, TargetSpec, gb_to_bytes
from tui_profiler.runtime.docker import DockerRuntime, confirm_container_caps
from tui_profiler.runtime.hardening import NOBODY, check_mounts, hardened, target_user
from tui_profiler.runtime.process import make_cgroup

GIB = 2**30
# What a v1 kernel with 4 KiB pages writes for "no memory limit".
V1_NO_LIMIT = 9223372036854771712


def _files(d: Path, **files: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name.replace("__", ".")).write_text(text)
    return d


def v2_tree(root: Path, **files: str) -> CgroupPaths:
    """A v2 root with one cgroup `target/` holding `files` (dots written as __)."""
    _files(root, cgroup__controllers="cpuset cpu io memory pids\n")
    d = _files(root / "target", **files)
    return CgroupPaths(2, v2_dir=str(d))


def v1_tree(
    root: Path, *, quota: str = "", period: str = "100000", memory: str = "", cpus: str = ""
) -> CgroupPaths:
    """A v1 tree with cpu and cpuacct co-mounted, and one cgroup `target/` per controller holding the
    given values (a file left out when its value is "")."""
    files = {
        "cpu": {"cpu.cfs_quota_us": quota, "cpu.cfs_period_us": period if quota else ""},
        "memory": {"memory.limit_in_bytes": memory},
        "cpuset": {"cpuset.cpus": cpus},
    }
    dirs = {}
    for ctrl, values in files.items():
        d = root / ("cpu,cpuacct" if ctrl == "cpu" else ctrl) / "target"
        d.mkdir(parents=True)
        for name, text in values.items():
            if text:
                (d / name).write_text(text + "\n")
        dirs[ctrl] = str(d)
    return CgroupPaths(1, v1_dirs=dirs)


# ---------------------------------------------------------------------------------------------- limits


def test_v2_limits(tmp_path: Path) -> None:
    paths = v2_tree(
        tmp_path,
        cpu__max="150000 100000\n",
        memory__max=f"{GIB}\n",
        cpuset__cpus__effective="0-1,4\n",
    )
    assert read_cpu_limit(paths) == pytest.approx(1.5)
    assert read_memory_limit(paths) == GIB
    assert read_cpuset(paths) == "0-1,4"


def test_v2_unlimited_and_unreadable(tmp_path: Path) -> None:
    paths = v2_tree(tmp_path, cpu__max="max 100000\n", memory__max="max\n")
    assert read_cpu_limit(paths) is None
    assert read_memory_limit(paths) is None
    assert read_cpuset(paths) is None  # no cpuset file
    gone = CgroupPaths(2, v2_dir=str(tmp_path / "gone"))
    assert (read_cpu_limit(gone), read_memory_limit(gone), read_cpuset(gone)) == (None, None, None)
    assert read_cpu_limit(CgroupPaths(2)) is None


def test_v1_limits(tmp_path: Path) -> None:
    paths = v1_tree(tmp_path, quota="50000", memory=str(2 * GIB), cpus="0")
    assert read_cpu_limit(paths) == pytest.approx(0.5)
    assert read_memory_limit(paths) == 2 * GIB
    assert read_cpuset(paths) == "0"


@pytest.mark.parametrize("value", [V1_NO_LIMIT, 2**63 - 2**16, V1_UNLIMITED])
def test_v1_unlimited_memory_reads_none(tmp_path: Path, value: int) -> None:
    """v1's "no limit" is LONG_MAX rounded down to a page, whatever the page size."""
    paths = v1_tree(tmp_path, memory=str(value))
    assert read_memory_limit(paths) is None


def test_v1_largest_real_limit_is_a_limit(tmp_path: Path) -> None:
    paths = v1_tree(tmp_path, memory=str(V1_UNLIMITED - 4096))
    assert read_memory_limit(paths) == V1_UNLIMITED - 4096


@pytest.mark.parametrize(("quota", "period"), [("-1", "100000"), ("", "100000"), ("50000", "0"), ("x", "1")])
def test_v1_no_quota_or_garbage_reads_none(tmp_path: Path, quota: str, period: str) -> None:
    paths = v1_tree(tmp_path, quota=quota, period=period, memory="not a number")
    assert read_cpu_limit(paths) is None
    assert read_memory_limit(paths) is None


def test_version_label_and_own_cgroup(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    _files(v2, cgroup__controllers="cpu memory\n", cpu__max="200000 100000\n", memory__max="max\n")
    assert (cgroup_version(v2), cgroup_label(v2)) == (2, "v2")
    assert read_cpu_limit(own_cgroup(v2)) == pytest.approx(2.0)
    assert read_memory_limit(own_cgroup(v2)) is None

    v1 = tmp_path / "v1"
    _files(v1 / "cpu,cpuacct", cpu__cfs_quota_us="25000\n", cpu__cfs_period_us="100000\n")
    _files(v1 / "memory", memory__limit_in_bytes=f"{GIB}\n")
    (v1 / "unified").mkdir()
    assert (cgroup_version(v1), cgroup_label(v1)) == (1, "v1")
    assert set(v1_mounts(v1)) == {"cpu", "cpuacct", "memory"}
    own = own_cgroup(v1)
    assert read_cpu_limit(own) == pytest.approx(0.25)
    assert read_memory_limit(own) == GIB

    empty = tmp_path / "none"
    empty.mkdir()
    assert cgroup_label(empty) == "not available"
    assert not own_cgroup(empty).found


@pytest.mark.skipif(not cgroups.CGROUP_ROOT.is_dir(), reason="no cgroup file system here")
def test_this_machine() -> None:
    """The real tree reads without error: a limit is a positive number or None."""
    root = cgroups.CGROUP_ROOT
    assert cgroup_label(root) in ("v1", "v2", "not available")
    own = own_cgroup(root)
    assert own.version == cgroup_version(root)
    cpus, mem = read_cpu_limit(own), read_memory_limit(own)
    assert cpus is None or cpus > 0
    assert mem is None or 0 < mem < V1_UNLIMITED


# ------------------------------------------------------------------------------------ cap confirmation


def test_confirm_caps_within_the_tolerances(tmp_path: Path) -> None:
    asked = gb_to_bytes(0.3)  # not page-aligned: the kernel keeps whole pages, rounding down
    kept = asked - asked % 4096
    paths = v2_tree(
        tmp_path,
        cpu__max=f"{round((1.5 + CPU_TOLERANCE_CORES / 2) * 100000)} 100000\n",
        memory__max=f"{kept}\n",
        cpuset__cpus__effective="0-1\n",
    )
    got = confirm_caps(paths, cpus=1.5, memory_bytes=asked, cpuset=True)
    assert (got.cpus, got.memory, got.cpuset) == (True, True, "0-1")
    assert (got.cpus_note, got.memory_note) == ("", "")


def test_confirm_caps_outside_the_tolerances(tmp_path: Path) -> None:
    paths = v2_tree(tmp_path, cpu__max="200000 100000\n", memory__max=f"{GIB + MEMORY_TOLERANCE_BYTES}\n")
    got = confirm_caps(paths, cpus=1.5, memory_bytes=GIB)
    assert not got.cpus and not got.memory and got.cpuset is None
    assert got.cpus_note == "cpus: cgroup quota reads 2.0 cores, asked 1.5"
    assert got.memory_note == f"memory: cgroup limit reads {GIB + MEMORY_TOLERANCE_BYTES}, asked {GIB}"


def test_confirm_caps_unlimited_or_unasked(tmp_path: Path) -> None:
    paths = v1_tree(tmp_path, quota="-1", memory=str(V1_NO_LIMIT), cpus="0-1")
    got = confirm_caps(paths, cpus=1.0, memory_bytes=GIB, cpuset=True)
    assert not got.cpus and not got.memory and got.cpuset == "0-1"
    assert "reads None" in got.cpus_note and "reads None" in got.memory_note
    nothing = confirm_caps(paths, cpus=None, memory_bytes=None, cpuset=True)
    assert not nothing.cpus and not nothing.memory and nothing.cpuset is None
    assert (nothing.cpus_note, nothing.memory_note) == ("", "")


def test_process_cgroup_is_confirmed(tmp_path: Path) -> None:
    """What the process runtime writes into a (fake) v2 tree, `confirm_caps` confirms."""
    _files(tmp_path, cgroup__controllers="cpuset cpu memory\n")
    spec = TargetSpec(session_id="s", image="", model="", cpus=1.5, memory_gb=0.3, cpuset=True)
    paths, created, procs = make_cgroup("t", spec, tmp_path)
    assert created == [tmp_path / "tui-profiler", tmp_path / "tui-profiler" / "t"]
    assert procs == [str(tmp_path / "tui-profiler" / "t" / "cgroup.procs")]
    (Path(paths.v2_dir or "") / "cpuset.cpus.effective").write_text(
        (Path(paths.v2_dir or "") / "cpuset.cpus").read_text()
    )
    got = confirm_caps(paths, cpus=spec.cpus, memory_bytes=gb_to_bytes(0.3), cpuset=True)
    assert got.cpus and got.memory
    assert got.cpuset == cpuset_text(pinned_cores(1.5))


def test_docker_confirmation_checks_host_config_then_kernel(tmp_path: Path) -> None:
    spec = TargetSpec(session_id="s", image="", model="", cpus=0.5, memory_gb=1.0, cpuset=True)
    host_config = {"NanoCpus": 500_000_000, "Memory": GIB, "MemorySwap": GIB, "CpusetCpus": "3"}
    paths = v2_tree(tmp_path, cpu__max="50000 100000\n", memory__max=f"{GIB}\n")
    enforced = EnforcedCaps.asked_by(spec)
    confirm_container_caps(host_config, paths, spec, enforced)
    assert enforced.cpus_enforced and enforced.memory_enforced and enforced.notes == []
    assert enforced.cpuset == "3"  # the kernel's file unreadable: the engine's word

    unread = EnforcedCaps.asked_by(spec)
    confirm_container_caps(host_config, CgroupPaths(2), spec, unread)
    assert unread.cpus_enforced and unread.memory_enforced
    assert all("HostConfig only" in n for n in unread.notes) and len(unread.notes) == 2

    wrong = EnforcedCaps.asked_by(spec)
    confirm_container_caps({**host_config, "NanoCpus": 1, "MemorySwap": -1}, paths, spec, wrong)
    assert not wrong.cpus_enforced and wrong.memory_enforced
    assert [n.split(" ")[0] for n in wrong.notes] == ["cpus:", "memory:"]


# ----------------------------------------------------------------------------------------------- cores


def test_cpuset_text_and_cores_round_trip() -> None:
    assert cpuset_cores("0-3,6") == [0, 1, 2, 3, 6]
    assert cpuset_text([6, 0, 1, 2, 3]) == "0-3,6"
    assert cpuset_text([1, 3, 5]) == "1,3,5"
    assert cpuset_text([]) == ""
    for text in ("0", "0-1", "2-5,8,10-11"):
        assert cpuset_text(cpuset_cores(text)) == text


def test_pinned_cores() -> None:
    assert pinned_cores(2.5, [4, 5, 6, 7]) == [4, 5, 6]
    assert pinned_cores(0.1, [4, 5]) == [4]
    assert pinned_cores(8, [4, 5]) == [4, 5]  # fewer cores than asked: all of them
    mine = affinity_cores()
    assert pinned_cores(1) == mine[:1]
    assert set(mine) <= set(range(os.cpu_count() or 1)) and mine == sorted(mine)


def test_docker_pins_the_first_cores_of_its_engine() -> None:
    rt = DockerRuntime(client=object(), cpuset="2-5")
    spec = TargetSpec(session_id="s", image="img", model="m", cpus=2.5, cpuset=True)
    enforced = EnforcedCaps.asked_by(spec)
    assert rt._create_kwargs(spec, NOBODY, enforced)["cpuset_cpus"] == "2-4"
    assert enforced.notes == []
    spec.cpus = 8
    kwargs = rt._create_kwargs(spec, NOBODY, enforced)
    assert kwargs["cpuset_cpus"] == "2-5"
    assert enforced.notes == ["cpuset: 8 cores asked, the host gives 4; pinned to all of them"]
    spec.cpuset = False
    assert rt._create_kwargs(spec, NOBODY, EnforcedCaps.asked_by(spec))["cpuset_cpus"] == "2-5"


# -------------------------------------------------------------------------------------------- hardening


def test_hardened_settings() -> None:
    base = {"user": NOBODY, "security_opt": ["no-new-privileges"], "cap_drop": ["ALL"], "read_only": True}
    assert hardened() == base
    assert hardened("1000:1000", tmpfs_size="1g", pids_limit=256) == {
        **base,
        "user": "1000:1000",
        "tmpfs": {"/tmp": "rw,nosuid,nodev,size=1g,mode=1777"},
        "pids_limit": 256,
    }
    kwargs = DockerRuntime(client=object())._create_kwargs(
        TargetSpec(session_id="s", image="img", model="m"), "app", EnforcedCaps()
    )
    assert {k: kwargs[k] for k in hardened()} == {**base, "user": "app"}
    assert kwargs["pids_limit"] == 1024 and kwargs["tmpfs"]["/tmp"].startswith("rw,nosuid,nodev,size=512m")


@pytest.mark.parametrize(
    ("asked", "image_user", "runs_as"),
    [
        (None, "", NOBODY),
        (None, "root", NOBODY),
        (None, "0:0", NOBODY),
        (None, "app", "app"),
        ("7", "app", "7"),
    ],
)
def test_target_user(asked: str | None, image_user: str, runs_as: str) -> None:
    assert target_user(asked, image_user) == runs_as


def test_the_docker_socket_is_refused() -> None:
    check_mounts([("/tmp", "/data")])
    with pytest.raises(TargetFailed) as info:
        check_mounts([("/run/docker.sock", "/s")])
    assert info.value.status == "refused"
