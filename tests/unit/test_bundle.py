"""The Asset Bundle (databricks.yml + resources/*.yml) against the Databricks CLI's own schema.

The CLI cannot be installed here, so this does what ``databricks bundle validate`` does first:
merge the ``include:`` files into the root, then validate the result against the CLI's JSON
schema (../shared/databricks/bundle-schema.json), both as written (``${var.x}`` references) and
resolved per target (variables replaced by the target's values).
"""

from __future__ import annotations

import copy
import glob
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
regex = pytest.importorskip("regex")

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT.parent / "shared" / "databricks" / "bundle-schema.json"


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Deep merge of mappings, as the CLI merges included files into the root."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif key in into and into[key] != value:
            raise AssertionError(f"included files define {key!r} twice, differently")
        else:
            into[key] = copy.deepcopy(value)


def load_bundle(root: Path = ROOT) -> dict[str, Any]:
    bundle = yaml.safe_load((root / "databricks.yml").read_text())
    included = 0
    for pattern in bundle.get("include", []):
        for name in sorted(glob.glob(str(root / pattern))):
            _merge(bundle, yaml.safe_load(Path(name).read_text()) or {})
            included += 1
    assert included == len(list(root.glob("resources/*.yml"))) > 0, "include: missed files"
    return bundle


_REF = re.compile(r"\$\{(var|bundle)\.([A-Za-z0-9_.-]+)\}")


def resolve(bundle: dict[str, Any], target: str) -> dict[str, Any]:
    """The bundle as the CLI would deploy it to ``target``: variables and bundle refs replaced."""
    variables = {k: v.get("default") for k, v in bundle.get("variables", {}).items()}
    variables.update(bundle["targets"][target].get("variables", {}) or {})
    names = {"name": bundle["bundle"]["name"], "target": target}

    def sub(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: sub(v) for k, v in node.items()}
        if isinstance(node, list):
            return [sub(v) for v in node]
        if isinstance(node, str):

            def one(m: re.Match[str]) -> str:
                table = variables if m[1] == "var" else names
                assert m[2] in table, f"${{{m[1]}.{m[2]}}} is not defined"
                return str(table[m[2]])

            return _REF.sub(one, node)
        return node

    resolved = sub({k: v for k, v in bundle.items() if k != "targets"})
    resolved["targets"] = {target: sub(bundle["targets"][target])}
    return resolved


@pytest.fixture(scope="module")
def validator() -> Any:
    if not SCHEMA_FILE.exists():
        pytest.skip(f"{SCHEMA_FILE} is absent: nothing to validate the bundle against")
    import json

    schema = json.loads(SCHEMA_FILE.read_text())
    base = jsonschema.validators.validator_for(schema)

    def pattern(validator: Any, patrn: str, instance: Any, schema: Any) -> Any:
        # the CLI's patterns use \p{L} / \p{N}, which only the `regex` package understands
        if isinstance(instance, str) and not regex.search(patrn, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {patrn!r}")

    cls = jsonschema.validators.extend(base, {"pattern": pattern})
    return cls(schema)


def _errors(validator: Any, document: dict[str, Any]) -> list[str]:
    out = []
    for error in validator.iter_errors(document):
        deepest = max(error.context or [error], key=lambda e: len(e.absolute_path))
        out.append(f"{'/'.join(map(str, deepest.absolute_path))}: {deepest.message}")
    return out


def test_bundle_as_written_matches_the_cli_schema(validator: Any) -> None:
    assert _errors(validator, load_bundle()) == []


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_bundle_resolved_per_target_matches_the_cli_schema(validator: Any, target: str) -> None:
    resolved = resolve(load_bundle(), target)
    assert "${var." not in str(resolved)
    assert _errors(validator, resolved) == []


def test_schema_check_reports_a_wrong_type_and_an_unknown_key(validator: Any) -> None:
    bundle = load_bundle()
    task = bundle["resources"]["jobs"]["ecomstream_pipeline"]["tasks"][0]
    task["max_retries"] = "x"
    task["python_wheel_task"]["entrypoint"] = "typo"
    errors = _errors(validator, bundle)
    joined = "\n".join(errors)
    assert "max_retries" in joined, joined
    assert "entrypoint" in joined, joined


def test_bundle_shape_wheel_targets_variables_and_one_pipeline_task() -> None:
    bundle = load_bundle()
    assert set(bundle["targets"]) == {"dev", "prod"}
    assert bundle["targets"]["dev"]["mode"] == "development"
    assert bundle["targets"]["prod"]["mode"] == "production"
    assert {"catalog", "schema", "secret_scope"} <= set(bundle["variables"])
    (artifact,) = bundle["artifacts"].values()
    assert artifact["type"] == "whl" and "wheel" in artifact["build"]

    job = bundle["resources"]["jobs"]["ecomstream_pipeline"]
    # one query writes every layer, so one task runs it (issue 10)
    (task,) = job["tasks"]
    wheel = task["python_wheel_task"]
    assert wheel["package_name"] == "ecomstream"
    assert wheel["entry_point"] == "ecomstream-all"
    assert "--trigger=available-now" in wheel["parameters"]
    assert any(lib.get("whl", "").endswith(".whl") for lib in task["libraries"])
    assert "quartz_cron_expression" in job["schedule"]


def test_every_entry_point_the_bundle_names_is_a_script_of_the_wheel() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    bundle = load_bundle()
    named = {
        t["python_wheel_task"]["entry_point"]
        for job in bundle["resources"]["jobs"].values()
        for t in job["tasks"]
        if "python_wheel_task" in t
    }
    assert named <= set(scripts), sorted(named - set(scripts))
    for name in named:
        module, _, func = scripts[name].partition(":")
        imported = __import__(module, fromlist=[func])
        assert callable(getattr(imported, func))


def test_no_secret_in_the_bundle() -> None:
    text = "\n".join(
        p.read_text() for p in [ROOT / "databricks.yml", *ROOT.glob("resources/*.yml")]
    )
    assert "SharedAccessKey=" not in text
    assert "Endpoint=sb://" not in text
    # the producer's connection string is a Databricks secret reference, resolved at run time
    assert "{{secrets/${var.secret_scope}/${var.eventhubs_secret_key}}}" in text
