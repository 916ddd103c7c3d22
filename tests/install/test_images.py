"""The operator image runs for real under runc: non-root, read-only root filesystem,
no network; it prints its version, imports without PyTorch and carries the CRDs.

(The runtime image serving a model in containerd under a real kubelet is
tests/e2e/test_real_node.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from install_helpers import runc_run, unpack_oci_archive

MAX_OPERATOR_MB = 150  # the goal for the operator image


@pytest.fixture(scope="module")
def operator_image(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, object], Path]:
    from berth_dev.images import build_operator

    archive = build_operator()  # cached by content; built once per source change
    dest = tmp_path_factory.mktemp("operator-image")
    rootfs, config = unpack_oci_archive(archive, dest)
    return rootfs, config, archive


@pytest.mark.integration
def test_operator_image_prints_its_version(
    operator_image: tuple[Path, dict[str, object], Path], tmp_path: Path
) -> None:
    rootfs, config, _ = operator_image
    proc = runc_run(rootfs, config, ["operator", "version"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "berth-operator 0.1.0"


@pytest.mark.integration
def test_operator_image_has_no_torch_and_carries_the_crds(
    operator_image: tuple[Path, dict[str, object], Path], tmp_path: Path
) -> None:
    rootfs, config, _ = operator_image
    code = (
        "import sys, json, importlib.util; import berth_operator.main, berth_operator.handlers;"
        "from berth_operator import apply_crds;"
        "print(json.dumps({'torch': importlib.util.find_spec('torch') is not None,"
        " 'crds': sorted(d['metadata']['name'] for d in apply_crds.load()),"
        " 'crd_dir': str(apply_crds.crd_dir()), 'uid': __import__('os').getuid()}))"
    )
    cfg = json.loads(json.dumps(config))
    cfg["config"]["Entrypoint"] = ["/opt/berth/bin/python", "-c", code]
    proc = runc_run(rootfs, cfg, [], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {
        "torch": False,
        "crds": ["modeldeployments.serving.berth.dev", "scalingpolicies.serving.berth.dev"],
        "crd_dir": out["crd_dir"],
        "uid": 65532,
    }
    assert out["crd_dir"].startswith("/opt/berth/lib/")  # package data, not a source tree


@pytest.mark.integration
def test_operator_image_labels_and_size(
    operator_image: tuple[Path, dict[str, object], Path],
) -> None:
    _, config, archive = operator_image
    labels = config["config"]["Labels"]  # type: ignore[index]
    for key in ("title", "version", "revision", "source", "licenses"):
        assert labels[f"org.opencontainers.image.{key}"], key
    assert config["config"]["User"] == "65532:65532"  # type: ignore[index]
    size_mb = archive.stat().st_size / 1e6
    print(f"\noperator image: {size_mb:.0f} MB (compressed layers)")
    assert size_mb < MAX_OPERATOR_MB


@pytest.mark.integration
def test_runtime_image_carries_the_object_store_clients() -> None:
    """s3:// and gs:// models must load in a pod, not only in the test venv: the runtime
    image's dependency layer holds boto3 and google-cloud-storage (the s3 and gcs extras)."""
    from berth_dev import images

    images.build_runtime()  # cached by content
    listing = (images.cache_dir() / f"deps-{images.deps_key()}.files").read_text().split("\n")
    site = "opt/berth/lib/python3.11/site-packages/"
    for module in ("boto3/__init__.py", "google/cloud/storage/__init__.py", "torch/__init__.py"):
        assert any(f.endswith(site + module) for f in listing), module
