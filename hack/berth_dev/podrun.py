"""Pod spec -> local process plan: the pure half of the dev node agent.

The agent runs each container of a pod bound to its node as a local process. This
module decides *what* to run and never starts anything; the agent does the acting.

Image mapping. The agent has no container runtime: an image whose repository ends in
``berth-runtime`` (``ghcr.io/berth-dev/berth-runtime:0.1.0``, ``berth-runtime:dev``,
...) is mapped to this checkout's virtual environment, i.e. a command ``berth-runtime``
(or ``python``) resolves to ``<venv>/bin/berth-runtime``. Without a command the image's
entry point ``berth-runtime serve`` is used. Any other image is refused with reason
``ErrImageNotSupported`` in the container's Waiting state.

Volume mapping (``<root>`` is the dev cluster directory):

- ``emptyDir`` -> ``<root>/agent/pods/<uid>/volumes/<name>`` (removed with the pod);
- ``persistentVolumeClaim`` -> ``<root>/pvc/<namespace>/<claim>``, so a model copied
  there is what ``pvc://<claim>/<path>`` names inside the pod;
- ``configMap`` / ``secret`` / ``projected`` / ``downwardAPI`` -> files written into the
  pod's volume directory (a projected service account token is an empty file).

A container sees its mounts through a per-pod file tree ``<pod dir>/fs`` where each
mountPath is a symbolic link to the local directory. Absolute paths in the env values,
command and args that lie on a mount path, or above one (``/mnt/pvc`` above
``/mnt/pvc/models``), are rewritten to the same path under ``<pod dir>/fs``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

RUNTIME_REPOSITORY = "berth-runtime"
"""Images whose repository's last path component is this run from the local venv."""

IMAGE_DEFAULT_ARGV = ("berth-runtime", "serve")
"""The runtime image's ENTRYPOINT + CMD, used when a container sets neither."""

IMAGE_DEFAULT_ENV = {"BERTH_PVC_ROOT": "/mnt/pvc", "BERTH_CACHE_DIR": "/tmp/berth-cache"}
"""The runtime's in-image path defaults, made explicit so they are translated like env."""

POD_IP_ENV = "BERTH_HOST"
"""Set to the pod IP so each runtime binds its own loopback address."""


class Refused(Exception):
    """The container cannot run locally; `reason` goes in its Waiting state."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class VolumePlan:
    """Where a pod volume lives locally and which files to write into it first."""

    name: str
    path: Path
    files: dict[str, bytes] = field(default_factory=dict)
    ephemeral: bool = True  # removed with the pod (emptyDir, configMap, secret)


@dataclass(frozen=True)
class ProcessPlan:
    """Everything needed to start one container as a local process."""

    container: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    links: dict[str, Path]  # mountPath -> local directory (linked under the pod's fs root)
    ports: dict[str, int]  # port name (or its number as text) -> container port


def image_repository(image: str) -> str:
    """`ghcr.io/x/berth-runtime:1.0@sha256:..` -> `ghcr.io/x/berth-runtime`."""
    repo = image.split("@", 1)[0]
    last = repo.rsplit("/", 1)[-1]
    if ":" in last:
        repo = repo[: len(repo) - len(last)] + last.split(":", 1)[0]
    return repo


def image_supported(image: str) -> bool:
    return image_repository(image).rsplit("/", 1)[-1] == RUNTIME_REPOSITORY


def refuse_image_message(image: str, bin_dir: Path) -> str:
    return (
        f"image {image!r} cannot run on the Berth dev node: it runs only images whose "
        f"repository ends in '{RUNTIME_REPOSITORY}', mapped to the local entry point "
        f"{bin_dir / RUNTIME_REPOSITORY}; use such an image or schedule the pod on a KWOK node"
    )


def pvc_dir(pvc_root: Path, namespace: str, claim: str) -> Path:
    """The local directory standing for PersistentVolumeClaim `claim`."""
    return pvc_root / namespace / claim


def _decode_secret(data: Mapping[str, str]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in data.items()}


def _keyed_files(
    source: Mapping[str, bytes], items: list[dict[str, Any]] | None
) -> dict[str, bytes]:
    if not items:
        return dict(source)
    return {it["path"]: source[it["key"]] for it in items if it["key"] in source}


def plan_volumes(
    pod: Mapping[str, Any],
    pod_dir: Path,
    pvc_root: Path,
    configmaps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
) -> dict[str, VolumePlan]:
    """Each pod volume -> its local directory; refuses kinds the agent cannot map."""
    ns = pod["metadata"]["namespace"]
    out: dict[str, VolumePlan] = {}
    for vol in pod["spec"].get("volumes") or []:
        name = vol["name"]
        local = pod_dir / "volumes" / name
        if "emptyDir" in vol:
            out[name] = VolumePlan(name, local)
        elif "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"]["claimName"]
            out[name] = VolumePlan(name, pvc_dir(pvc_root, ns, claim), ephemeral=False)
        elif "configMap" in vol:
            ref = vol["configMap"]
            cm = configmaps.get(ref["name"])
            if cm is None:
                if ref.get("optional"):
                    out[name] = VolumePlan(name, local)
                    continue
                raise Refused(
                    "CreateContainerConfigError",
                    f'configmap "{ref["name"]}" not found (volume {name!r})',
                )
            data = {k: v.encode() for k, v in cm.items()}
            out[name] = VolumePlan(name, local, _keyed_files(data, ref.get("items")))
        elif "secret" in vol:
            ref = vol["secret"]
            sec = secrets.get(ref["secretName"])
            if sec is None:
                if ref.get("optional"):
                    out[name] = VolumePlan(name, local)
                    continue
                raise Refused(
                    "CreateContainerConfigError",
                    f'secret "{ref["secretName"]}" not found (volume {name!r})',
                )
            out[name] = VolumePlan(name, local, _keyed_files(_decode_secret(sec), ref.get("items")))
        elif "projected" in vol or "downwardAPI" in vol:
            sources = (
                vol["projected"].get("sources") or []
                if "projected" in vol
                else [{"downwardAPI": vol["downwardAPI"]}]
            )
            out[name] = VolumePlan(name, local, _projected(pod, name, sources, configmaps, secrets))
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise Refused(
                "CreateContainerConfigError",
                f"volume {name!r} of kind {kinds} is not supported by the dev node agent "
                "(supported: emptyDir, persistentVolumeClaim, configMap, secret)",
            )
    return out


def _projected(
    pod: Mapping[str, Any],
    volume: str,
    sources: list[dict[str, Any]],
    configmaps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
) -> dict[str, bytes]:
    """Files of a projected (or downwardAPI) volume. A service account token is an empty
    file: the agent does not mint tokens, so pods that call the API do not run locally."""
    files: dict[str, bytes] = {}
    for src in sources:
        if "configMap" in src or "secret" in src:
            is_cm = "configMap" in src
            ref = src["configMap" if is_cm else "secret"]
            store = configmaps.get(ref["name"]) if is_cm else secrets.get(ref["name"])
            if store is None:
                if ref.get("optional"):
                    continue
                kind = "configmap" if is_cm else "secret"
                raise Refused(
                    "CreateContainerConfigError",
                    f'{kind} "{ref["name"]}" not found (volume {volume!r})',
                )
            data = {k: v.encode() for k, v in store.items()} if is_cm else _decode_secret(store)
            files.update(_keyed_files(data, ref.get("items")))
        elif "downwardAPI" in src:
            for item in src["downwardAPI"].get("items") or []:
                if "fieldRef" in item:
                    value = _field_ref(pod, item["fieldRef"]["fieldPath"], "", "")
                    files[item["path"]] = value.encode()
        elif "serviceAccountToken" in src:
            files[src["serviceAccountToken"]["path"]] = b""
    return files


def check_images(pod: Mapping[str, Any], bin_dir: Path) -> None:
    """Refuse the pod when any container's image is outside the mapping, or when it has
    init containers (the runtime pods the operator renders have none)."""
    if pod["spec"].get("initContainers"):
        raise Refused(
            "CreateContainerConfigError",
            "init containers are not supported by the Berth dev node agent",
        )
    for c in pod["spec"].get("containers") or []:
        image = str(c.get("image", ""))
        if not image_supported(image):
            raise Refused("ErrImageNotSupported", refuse_image_message(image, bin_dir))


def referenced_objects(pod: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """Names of the ConfigMaps and Secrets a pod reads (env, envFrom, volumes)."""
    cms: set[str] = set()
    secs: set[str] = set()
    for vol in pod["spec"].get("volumes") or []:
        if "configMap" in vol:
            cms.add(vol["configMap"]["name"])
        if "secret" in vol:
            secs.add(vol["secret"]["secretName"])
        for src in (vol.get("projected") or {}).get("sources") or []:
            if "configMap" in src:
                cms.add(src["configMap"]["name"])
            if "secret" in src:
                secs.add(src["secret"]["name"])
    for c in pod["spec"].get("containers") or []:
        for e in c.get("env") or []:
            src = e.get("valueFrom") or {}
            if "configMapKeyRef" in src:
                cms.add(src["configMapKeyRef"]["name"])
            if "secretKeyRef" in src:
                secs.add(src["secretKeyRef"]["name"])
        for ef in c.get("envFrom") or []:
            if "configMapRef" in ef:
                cms.add(ef["configMapRef"]["name"])
            if "secretRef" in ef:
                secs.add(ef["secretRef"]["name"])
    return cms, secs


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are replaced, `$$` escapes a `$`."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_REF.sub(sub, value)


def _field_ref(pod: Mapping[str, Any], path: str, pod_ip: str, host_ip: str) -> str:
    meta = pod["metadata"]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path not in simple:
        raise Refused("CreateContainerConfigError", f"fieldRef {path!r} is not supported")
    return str(simple[path])


def _resource_ref(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    kind, _, res = str(ref["resource"]).partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(res)
    return str(value) if value is not None else "0"


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    configmaps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
    pod_ip: str,
    host_ip: str,
) -> dict[str, str]:
    """The container's environment as the kubelet would compute it (before path mapping)."""
    env: dict[str, str] = {}
    for ef in container.get("envFrom") or []:
        prefix = ef.get("prefix", "")
        if "configMapRef" in ef:
            ref = ef["configMapRef"]
            data = configmaps.get(ref["name"])
            what = f'configmap "{ref["name"]}"'
            values = dict(data) if data is not None else None
        else:
            ref = ef["secretRef"]
            sdata = secrets.get(ref["name"])
            what = f'secret "{ref["name"]}"'
            values = (
                {k: v.decode() for k, v in _decode_secret(sdata).items()}
                if sdata is not None
                else None
            )
        if values is None:
            if ref.get("optional"):
                continue
            raise Refused("CreateContainerConfigError", f"{what} not found")
        for k, v in values.items():
            env[prefix + k] = v
    for e in container.get("env") or []:
        name = e["name"]
        if "valueFrom" not in e:
            env[name] = expand(str(e.get("value", "")), env)
            continue
        src = e["valueFrom"]
        if "configMapKeyRef" in src or "secretKeyRef" in src:
            is_cm = "configMapKeyRef" in src
            ref = src["configMapKeyRef" if is_cm else "secretKeyRef"]
            store = configmaps.get(ref["name"]) if is_cm else secrets.get(ref["name"])
            kind = "configmap" if is_cm else "secret"
            if store is None or ref["key"] not in store:
                if ref.get("optional"):
                    continue
                missing = f'{kind} "{ref["name"]}"' + (
                    "" if store is None else f' has no key "{ref["key"]}"'
                )
                raise Refused(
                    "CreateContainerConfigError",
                    f"{missing}{' not found' if store is None else ''} (env {name})",
                )
            raw = store[ref["key"]]
            env[name] = raw if is_cm else base64.b64decode(raw).decode()
        elif "fieldRef" in src:
            env[name] = _field_ref(pod, src["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "resourceFieldRef" in src:
            env[name] = _resource_ref(container, src["resourceFieldRef"])
        else:
            raise Refused("CreateContainerConfigError", f"env {name}: unsupported valueFrom")
    return env


def _mounts(container: Mapping[str, Any], volumes: Mapping[str, VolumePlan]) -> dict[str, Path]:
    links: dict[str, Path] = {}
    for vm in container.get("volumeMounts") or []:
        vol = volumes.get(vm["name"])
        if vol is None:
            raise Refused(
                "CreateContainerConfigError", f"volumeMount {vm['name']!r} names no pod volume"
            )
        local = vol.path / vm["subPath"] if vm.get("subPath") else vol.path
        links[str(PurePosixPath(vm["mountPath"]))] = local
    return links


def translate_path(value: str, mounts: Mapping[str, Path], fs_root: Path) -> str:
    """An absolute path on or above a mount path -> the same path under `fs_root`."""
    prefix = ""
    path = value
    if value.startswith("file://"):
        prefix, path = "file://", value[len("file://") :]
    if not path.startswith("/"):
        return value
    norm = str(PurePosixPath(path))
    for mp in mounts:
        if (
            norm == mp
            or norm.startswith(mp.rstrip("/") + "/")
            or mp.startswith(norm.rstrip("/") + "/")
        ):
            return prefix + str(fs_root) + norm
    return value


def plan_container(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    pod_ip: str,
    host_ip: str,
    pod_dir: Path,
    bin_dir: Path,
    volumes: Mapping[str, VolumePlan],
    configmaps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
    base_env: Mapping[str, str],
) -> ProcessPlan:
    """The local process for one container; raises Refused when it cannot run here."""
    image = str(container.get("image", ""))
    if not image_supported(image):
        raise Refused("ErrImageNotSupported", refuse_image_message(image, bin_dir))
    links = _mounts(container, volumes)
    fs_root = pod_dir / "fs"
    env = {**IMAGE_DEFAULT_ENV}
    env.update(container_env(pod, container, configmaps, secrets, pod_ip, host_ip))
    env = {k: translate_path(v, links, fs_root) for k, v in env.items()}
    env[POD_IP_ENV] = pod_ip
    env["HOSTNAME"] = pod["metadata"]["name"]
    full_env = {**base_env, **env}

    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        command = [IMAGE_DEFAULT_ARGV[0]]
        if not args:
            args = list(IMAGE_DEFAULT_ARGV[1:])
    argv = [expand(a, env) for a in command + args]
    argv = [translate_path(a, links, fs_root) for a in argv]
    exe = argv[0]
    if "/" not in exe:
        if exe in ("python", "python3"):
            exe = "python"
        candidate = bin_dir / exe
        if exe not in (RUNTIME_REPOSITORY, "python", "berth"):
            raise Refused(
                "RunContainerError",
                f"command {argv[0]!r} is not in the berth-runtime image mapping "
                f"(allowed: {RUNTIME_REPOSITORY}, python, berth from {bin_dir})",
            )
        argv[0] = str(candidate)
    workdir = container.get("workingDir")
    cwd = Path(translate_path(workdir, links, fs_root)) if workdir else pod_dir
    ports: dict[str, int] = {}
    for p in container.get("ports") or []:
        num = int(p["containerPort"])
        ports[str(num)] = num
        if p.get("name"):
            ports[p["name"]] = num
    return ProcessPlan(
        container=str(container["name"]),
        argv=argv,
        env=full_env,
        cwd=cwd,
        links=links,
        ports=ports,
    )


def gpu_request(pod: Mapping[str, Any], resource: str = "nvidia.com/gpu") -> int:
    """GPUs the pod's containers ask for (limits, as device plugins count them)."""
    total = 0
    for c in pod["spec"].get("containers") or []:
        limits = (c.get("resources") or {}).get("limits") or {}
        if resource in limits:
            total += int(str(limits[resource]))
    return total
