"""``--master``, ``--spark-conf``, ``--shared-data-dir`` and ``ecomstream spark``: the option
parsing, the rule for where a cluster's executors find the tables, and the launcher's command
lines. No JVM starts here (tests/integration/test_cluster.py runs a real cluster)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ecomstream import cli, cluster
from ecomstream.errors import EcomstreamError
from ecomstream.jobs.settings import PipelineSettings
from ecomstream.spark import (
    executors_on_this_machine,
    is_uri,
    parse_master,
    storage_problem,
)

PIPELINE = ["pipeline", "--topic", "t", "--bootstrap-servers", "127.0.0.1:9092"]


@pytest.fixture(autouse=True)
def _no_spark_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ECOMSTREAM_SPARK_MASTER", "ECOMSTREAM_MASTER", "ECOMSTREAM_SPARK_CONF",
                 "ECOMSTREAM_SHARED_DATA_DIR", "PYSPARK_GATEWAY_PORT"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


# -- masters ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "master",
    ["local", "local[*]", "local[2]", "local[4,3]", "local[*, 2]", "local-cluster[2,1,1024]",
     "spark://127.0.0.1:7077", "spark://a.example:7077,b.example:7077", "spark://[::1]:7077",
     "k8s://https://10.0.0.1:6443", "k8s://kube.example", "yarn"],
)  # fmt: skip
def test_master_urls_spark_accepts_are_accepted(master: str):
    assert parse_master(f" {master} ") == master


@pytest.mark.parametrize(
    ("master", "message"),
    [("local[0]", "invalid master"), ("local[x]", "invalid master"),
     ("spark://host", "invalid master"), ("spark://host:99999", "invalid master"),
     ("mesos://host:5050", "invalid master"), ("127.0.0.1:7077", "invalid master"),
     ("", "invalid master"), ("sc://localhost:15002", "Spark Connect address")],
)  # fmt: skip
def test_anything_else_is_refused_with_what_was_expected(master: str, message: str):
    with pytest.raises(ValueError, match=message):
        parse_master(master)


@pytest.mark.parametrize(
    ("master", "here"),
    [("local[*]", True), ("local-cluster[2,1,1024]", True), ("spark://127.0.0.1:7077", True),
     ("spark://localhost:7077", True), ("spark://[::1]:7077", True),
     ("spark://127.0.0.1:7077,127.0.0.2:7078", True),
     # a master under a name or a routable address may have workers anywhere
     ("spark://10.1.2.3:7077", False), ("spark://myhost:7077", False),
     ("spark://127.0.0.1:7077,10.1.2.3:7077", False),
     # pods and containers have filesystems of their own, wherever the API listens
     ("k8s://https://127.0.0.1:6443", False), ("yarn", False)],
)  # fmt: skip
def test_executors_share_this_machine_only_behind_a_loopback_master(master: str, here: bool):
    assert executors_on_this_machine(master) is here


# -- where the executors find the tables ----------------------------------------------------------
def test_a_loopback_master_takes_a_plain_data_dir():
    assert storage_problem("spark://127.0.0.1:7077", "/data", "127.0.0.1:9092", False) is None
    assert storage_problem("local[*]", "/data", "127.0.0.1:9092", False) is None


def test_a_remote_master_needs_the_data_dir_declared_shared():
    problem = storage_problem("spark://10.1.2.3:7077", "/data", "kafka.example:9092", False)
    assert problem is not None and "--shared-data-dir" in problem and "/data" in problem
    assert storage_problem("spark://10.1.2.3:7077", "/data", "kafka.example:9092", True) is None


@pytest.mark.parametrize("bootstrap", ["127.0.0.1:9092", "localhost:9092", "k:9092,[::1]:9092"])
def test_a_remote_master_cannot_read_a_loopback_broker(bootstrap: str):
    problem = storage_problem("k8s://https://10.0.0.1:6443", "/nfs/data", bootstrap, True)
    assert problem is not None and "loopback" in problem and bootstrap in problem


@pytest.mark.parametrize(
    ("path", "uri"),
    [("s3a://bucket/x", True), (Path("abfss://c@a.dfs.core.windows.net/x"), True),
     ("hdfs://nn:8020/x", True), ("/data/x", False), ("C:/data", False), ("data", False)],
)  # fmt: skip
def test_uris_are_told_apart_from_paths(path: str | Path, uri: bool):
    assert is_uri(path) is uri


def _settings(**kw: object) -> PipelineSettings:
    base: dict[str, object] = {"topic": "t", "data_dir": Path("/d"), "bootstrap_servers": "k:9092"}
    return PipelineSettings(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"master": "spark://10.1.2.3:7077"}, "--shared-data-dir"),
        ({"master": "yarn", "bootstrap_servers": "127.0.0.1:9092", "shared_data_dir": True},
         "loopback"),
        ({"master": "spark:/x"}, "--master: invalid master"),
        ({"master": "local[2]", "profile": "databricks", "bootstrap_servers": ""},
         "no effect with --profile databricks"),
        ({"data_dir": Path("s3a://bucket/tables")}, "is a URI"),
        ({"spark_conf": {"spark.master": "local"}}, "with --master"),
    ],
)  # fmt: skip
def test_pipeline_settings_refuse_what_executors_cannot_reach(kw: dict[str, object], message: str):
    with pytest.raises(EcomstreamError, match=message.replace("-", r"\-")):
        _settings(**kw)


def test_pipeline_settings_keep_the_master_and_the_conf():
    s = _settings(master=" spark://127.0.0.1:7077 ", spark_conf={"spark.executor.memory": "2g"})
    assert s.master == "spark://127.0.0.1:7077"
    assert s.adapter_settings()["master"] == "spark://127.0.0.1:7077"
    assert s.adapter_settings()["spark_conf"] == {"spark.executor.memory": "2g"}
    assert _settings().master is None  # local[*], or spark-submit's master (spark.default_master)
    shared = _settings(master="spark://10.1.2.3:7077", shared_data_dir=True)
    assert shared.adapter_settings()["shared_data_dir"] is True


# -- the options on the command line and in the environment ------------------------------------
def test_master_reads_ecomstream_spark_master(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ECOMSTREAM_SPARK_MASTER", "spark://127.0.0.1:7077")
    monkeypatch.setenv("ECOMSTREAM_MASTER", "local[1]")  # not the option's variable
    assert cli.build_parser().parse_args(PIPELINE).master == "spark://127.0.0.1:7077"
    args = cli.build_parser().parse_args([*PIPELINE, "--master", "local[2]"])
    assert args.master == "local[2]"
    assert cli.build_parser().parse_args(["demo"]).master == "spark://127.0.0.1:7077"


def test_master_also_reads_its_own_contract_variable(monkeypatch: pytest.MonkeyPatch):
    # CONTRACT.md §5: every option also reads ECOMSTREAM_<OPTION>
    monkeypatch.setenv("ECOMSTREAM_MASTER", "local[1]")
    assert cli.build_parser().parse_args(PIPELINE).master == "local[1]"


def test_master_defaults_to_none_meaning_local_star():
    from ecomstream.spark import DEFAULT_MASTER, default_master

    assert cli.build_parser().parse_args(PIPELINE).master is None
    assert default_master() == DEFAULT_MASTER == "local[*]"


def test_spark_submit_keeps_its_own_master(monkeypatch: pytest.MonkeyPatch):
    from ecomstream.spark import default_master

    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "40000")
    assert default_master() is None


def test_spark_conf_repeats_and_the_command_line_wins_per_key(monkeypatch: pytest.MonkeyPatch):
    from ecomstream.spark_cli import spark_conf

    monkeypatch.setenv(
        "ECOMSTREAM_SPARK_CONF",
        "spark.executor.memory=1g 'spark.executor.extraJavaOptions=-Da=1 -Db=2'",
    )
    args = cli.build_parser().parse_args(
        [*PIPELINE, "--spark-conf", "spark.executor.memory=2g", "--spark-conf", "x.y=a=b"]
    )
    assert spark_conf(args) == {
        "spark.executor.memory": "2g",
        "spark.executor.extraJavaOptions": "-Da=1 -Db=2",
        "x.y": "a=b",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*PIPELINE, "--spark-conf", "spark.executor.memory"], "expected KEY=VALUE"),
        ([*PIPELINE, "--spark-conf", "=2g"], "expected KEY=VALUE"),
        ([*PIPELINE, "--spark-conf", "spark.master=local"], "with --master"),
        ([*PIPELINE, "--master", "spark://nowhere"], "invalid master"),
        (["spark", "start", "--workers", "0"], "--workers"),
        (["spark", "start", "--worker-memory", "lots"], "must look like 512m or 1g"),
        (["spark", "start", "--port", "70000"], "--port"),
    ],
)
def test_bad_spark_options_are_one_line_and_exit_2(argv: list[str], message: str, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.build_parser().parse_args(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_bad_spark_conf_variable_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setenv("ECOMSTREAM_SPARK_CONF", "spark.executor.memory=1g oops")
    assert cli.main(PIPELINE) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ecomstream: error: ECOMSTREAM_SPARK_CONF=")
    assert "expected KEY=VALUE" in err[0]


def test_a_remote_master_with_a_local_data_dir_fails_before_anything(tmp_path: Path, capsys):
    data_dir = tmp_path / "data"
    argv = ["pipeline", "--topic", "t", "--bootstrap-servers", "kafka.example:9092",
            "--data-dir", str(data_dir), "--master", "spark://10.1.2.3:7077"]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--shared-data-dir" in err[0], err
    assert not data_dir.exists()


def test_the_demo_refuses_a_remote_master_before_starting_anything(tmp_path: Path):
    data_dir = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "ecomstream", "demo", "--data-dir", str(data_dir),
         "--master", "spark://10.1.2.3:7077", "--dashboard-port", "0", "--kafka-port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "loopback" in lines[0], lines
    assert not (data_dir / "kafka").exists()


def test_the_demo_hands_its_spark_options_to_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from ecomstream.demo import children, run

    started: list[list[str]] = []

    class FakeChild:
        def __init__(self, name: str, args: list[str], log: Path, env: object = None) -> None:
            started.append(args)
            self.pid, self.log_path = 1, log

    monkeypatch.setattr(children, "Child", FakeChild)
    settings = run.DemoSettings(
        data_dir=tmp_path, topic="t", bootstrap_servers="127.0.0.1:9", kafka_port=0,
        dashboard_port=0, rate=1, fault_rate=0, window="1 minute", duration=None,
        trigger_interval=None, status_interval=10, seed=None, master="spark://127.0.0.1:7077",
        spark_conf={"spark.executor.memory": "512m"},
    )  # fmt: skip
    demo = run.Demo(settings)
    demo.start_pipeline()
    (args,) = started
    assert args[args.index("--master") + 1] == "spark://127.0.0.1:7077"
    assert args[args.index("--spark-conf") + 1] == "spark.executor.memory=512m"
    assert "--shared-data-dir" not in args


# -- ecomstream spark -----------------------------------------------------------------------------
def test_the_launcher_command_lines_are_the_packages_own_spark_class(tmp_path: Path):
    home = cluster.spark_home()
    assert (home / "bin" / "spark-class").is_file() and (home / "jars").is_dir()
    master = cluster.master_command(home, 7077, 8080)
    assert master == [str(home / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master",
                      "--host", "127.0.0.1", "--port", "7077", "--webui-port", "8080"]  # fmt: skip
    worker = cluster.worker_command(
        home, "spark://127.0.0.1:7077", port=4000, webui_port=4001, cores=1, memory="1g",
        work_dir=tmp_path / "w",
    )  # fmt: skip
    assert worker[:2] == [str(home / "bin" / "spark-class"), cluster.WORKER_CLASS]
    assert worker[-1] == "spark://127.0.0.1:7077"
    options = dict(zip(worker[2:-1:2], worker[3:-1:2], strict=True))
    assert options == {
        "--host": "127.0.0.1", "--port": "4000", "--webui-port": "4001", "--cores": "1",
        "--memory": "1g", "--work-dir": str(tmp_path / "w"),
    }  # fmt: skip


def test_the_daemons_run_small_on_loopback_and_carry_their_data_dir(tmp_path: Path):
    sdir = tmp_path / "with space" / "spark"
    env = cluster.daemon_env(Path("/opt/pyspark"), sdir, "256m")
    assert env["SPARK_HOME"] == "/opt/pyspark" and env["SPARK_DAEMON_MEMORY"] == "256m"
    assert env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert f'"-Decomstream.spark.dir={sdir}"' in env["SPARK_DAEMON_JAVA_OPTS"]
    assert "-Dspark.port.maxRetries=0" in env["SPARK_DAEMON_JAVA_OPTS"]


def test_alive_workers_are_read_from_the_masters_json():
    state = {"workers": [{"port": 4000, "state": "ALIVE"}, {"port": 4002, "state": "DEAD"},
                         {"port": 4004, "state": "ALIVE"}]}  # fmt: skip
    assert cluster.alive_worker_ports(state) == {4000, 4004}
    assert cluster.alive_worker_ports(None) == set()


def test_status_and_stop_of_a_data_dir_without_a_cluster(tmp_path: Path, capsys):
    assert cli.main(["spark", "status", "--data-dir", str(tmp_path)]) == 3
    assert capsys.readouterr().out.startswith("not running")
    assert cli.main(["spark", "stop", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("no Spark cluster running")


def test_a_stale_pid_file_is_not_a_running_cluster(tmp_path: Path):
    sdir = cluster.spark_dir(tmp_path)
    sdir.mkdir(parents=True)
    (sdir / "cluster.json").write_text(
        '{"master": {"name": "master", "pid": 999999999, "port": 7077, "webui_port": 8080},'
        ' "workers": []}'
    )
    assert cluster.running(tmp_path) is None
    assert cluster.stop(tmp_path) is None
    assert not (sdir / "cluster.json").exists()


@pytest.mark.parametrize("memory", ["512m", "1g", "2G"])
def test_memory_sizes(memory: str):
    assert cluster.parse_memory(memory) == memory
