"""JSON Schemas (draft 2020-12) for the Kubernetes and KubeRay (ray.io/v1) objects in infra/k8s.

A faithful subset: every field listed here exists, with this type/enum, in the Kubernetes API (core/v1, apps/v1,
networking.k8s.io/v1) or in KubeRay's CRDs (ray-operator/apis/ray/v1: raycluster_types.go, rayjob_types.go,
rayservice_types.go; authOptions from KubeRay v1.5.1, submissionMode SidecarMode from v1.5). Fields the manifests
do not use are left out and `additionalProperties: false` rejects them, so a misspelt or invented field fails
validation instead of being silently dropped by the API server's pruning.
"""

from __future__ import annotations


def obj(properties: dict, required: tuple = (), extra: bool = False) -> dict:
    schema = {"type": "object", "properties": properties, "additionalProperties": extra}
    if required:
        schema["required"] = list(required)
    return schema


def map_of(value: dict) -> dict:
    return {"type": "object", "additionalProperties": value}


STR = {"type": "string"}
BOOL = {"type": "boolean"}
INT32 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}
NONNEG = {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}
STR_LIST = {"type": "array", "items": STR}
STR_MAP = map_of(STR)
DNS1123_LABEL = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
# resource.Quantity, as the CRDs spell it (int-or-string with this pattern).
QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern":
            r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}]}
INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}]}
PORT_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 15}  # IANA_SVC_NAME

OBJECT_META = obj({"name": DNS1123_LABEL, "namespace": DNS1123_LABEL, "labels": STR_MAP, "annotations": STR_MAP})
TEMPLATE_META = obj({"labels": STR_MAP, "annotations": STR_MAP})

KEY_REF = obj({"name": STR, "key": STR, "optional": BOOL}, required=("key",))
ENV_VAR = obj({
    "name": STR,
    "value": STR,
    "valueFrom": obj({"secretKeyRef": KEY_REF, "configMapKeyRef": KEY_REF,
                      "fieldRef": obj({"apiVersion": STR, "fieldPath": STR}, required=("fieldPath",))}),
}, required=("name",))
ENV_FROM = obj({"prefix": STR, "configMapRef": obj({"name": STR, "optional": BOOL}),
                "secretRef": obj({"name": STR, "optional": BOOL})})
RESOURCES = obj({"requests": map_of(QUANTITY), "limits": map_of(QUANTITY)})
CONTAINER_PORT = obj({"containerPort": {"type": "integer", "minimum": 1, "maximum": 65535}, "name": PORT_NAME,
                      "protocol": {"enum": ["TCP", "UDP", "SCTP"]}}, required=("containerPort",))
PROBE = obj({
    "httpGet": obj({"path": STR, "port": INT_OR_STRING, "scheme": {"enum": ["HTTP", "HTTPS"]}}, required=("port",)),
    "exec": obj({"command": STR_LIST}),
    "tcpSocket": obj({"port": INT_OR_STRING}, required=("port",)),
    "initialDelaySeconds": NONNEG, "periodSeconds": NONNEG, "timeoutSeconds": NONNEG, "failureThreshold": NONNEG,
    "successThreshold": NONNEG,
})
CONTAINER_SECURITY = obj({"allowPrivilegeEscalation": BOOL, "privileged": BOOL, "readOnlyRootFilesystem": BOOL,
                          "runAsNonRoot": BOOL, "runAsUser": {"type": "integer"}, "runAsGroup": {"type": "integer"},
                          "capabilities": obj({"add": STR_LIST, "drop": STR_LIST})})
POD_SECURITY = obj({"runAsNonRoot": BOOL, "runAsUser": {"type": "integer"}, "runAsGroup": {"type": "integer"},
                    "fsGroup": {"type": "integer"}, "fsGroupChangePolicy": {"enum": ["OnRootMismatch", "Always"]}})
VOLUME_MOUNT = obj({"name": STR, "mountPath": STR, "readOnly": BOOL, "subPath": STR}, required=("name", "mountPath"))
VOLUME = obj({
    "name": STR,
    "persistentVolumeClaim": obj({"claimName": STR, "readOnly": BOOL}, required=("claimName",)),
    "emptyDir": obj({"medium": {"enum": ["", "Memory"]}, "sizeLimit": QUANTITY}),
    "configMap": obj({"name": STR, "optional": BOOL}),
    "secret": obj({"secretName": STR, "optional": BOOL}),
}, required=("name",))
CONTAINER = obj({
    "name": DNS1123_LABEL, "image": STR, "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    "command": STR_LIST, "args": STR_LIST, "workingDir": STR,
    "env": {"type": "array", "items": ENV_VAR}, "envFrom": {"type": "array", "items": ENV_FROM},
    "ports": {"type": "array", "items": CONTAINER_PORT}, "resources": RESOURCES,
    "readinessProbe": PROBE, "livenessProbe": PROBE, "startupProbe": PROBE,
    "securityContext": CONTAINER_SECURITY, "volumeMounts": {"type": "array", "items": VOLUME_MOUNT},
}, required=("name",))
TOLERATION = obj({"key": STR, "operator": {"enum": ["Exists", "Equal"]}, "value": STR,
                  "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
                  "tolerationSeconds": {"type": "integer"}})
POD_SPEC = obj({
    "containers": {"type": "array", "items": CONTAINER, "minItems": 1},
    "initContainers": {"type": "array", "items": CONTAINER},
    "volumes": {"type": "array", "items": VOLUME},
    "securityContext": POD_SECURITY, "nodeSelector": STR_MAP, "tolerations": {"type": "array", "items": TOLERATION},
    "serviceAccountName": STR, "restartPolicy": {"enum": ["Always", "OnFailure", "Never"]},
    "terminationGracePeriodSeconds": {"type": "integer"},
}, required=("containers",))
POD_TEMPLATE = obj({"metadata": TEMPLATE_META, "spec": POD_SPEC}, required=("spec",))
SELECTOR = obj({"matchLabels": STR_MAP})
SERVICE_PORT = obj({"name": PORT_NAME, "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "targetPort": INT_OR_STRING, "protocol": {"enum": ["TCP", "UDP", "SCTP"]}}, required=("port",))
SERVICE_SPEC = obj({"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
                    "selector": STR_MAP, "ports": {"type": "array", "items": SERVICE_PORT}, "clusterIP": STR})
PVC_SPEC = obj({
    "accessModes": {"type": "array", "minItems": 1,
                    "items": {"enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]}},
    "storageClassName": STR, "volumeMode": {"enum": ["Filesystem", "Block"]},
    "resources": obj({"requests": map_of(QUANTITY), "limits": map_of(QUANTITY)}),
}, required=("accessModes", "resources"))

# -- KubeRay ray.io/v1 ----------------------------------------------------------------------------------------------
RAY_START_PARAMS = map_of(STR)  # map[string]string: values must be quoted strings ("0", "true")
HEAD_GROUP = obj({
    "serviceType": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
    "enableIngress": BOOL,
    "rayStartParams": RAY_START_PARAMS,
    "template": POD_TEMPLATE,
}, required=("template",))
WORKER_GROUP = obj({
    "groupName": STR, "replicas": NONNEG, "minReplicas": NONNEG, "maxReplicas": NONNEG,
    "numOfHosts": {"type": "integer", "minimum": 1}, "idleTimeoutSeconds": INT32, "suspend": BOOL,
    "rayStartParams": RAY_START_PARAMS, "template": POD_TEMPLATE,
    "scaleStrategy": obj({"workersToDelete": STR_LIST}),
}, required=("groupName", "template"))
RAY_CLUSTER_SPEC = obj({
    "rayVersion": STR,
    "authOptions": obj({"mode": {"enum": ["disabled", "token"]}}),
    "enableInTreeAutoscaling": BOOL,
    "autoscalerOptions": obj({
        "upscalingMode": {"enum": ["Default", "Aggressive", "Conservative"]},
        "idleTimeoutSeconds": INT32, "resources": RESOURCES, "image": STR,
        "imagePullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        "env": {"type": "array", "items": ENV_VAR}, "envFrom": {"type": "array", "items": ENV_FROM},
        "securityContext": CONTAINER_SECURITY, "volumeMounts": {"type": "array", "items": VOLUME_MOUNT},
    }),
    "headServiceAnnotations": STR_MAP,
    "suspend": BOOL,
    "headGroupSpec": HEAD_GROUP,
    "workerGroupSpecs": {"type": "array", "items": WORKER_GROUP},
}, required=("headGroupSpec",))
RAY_JOB_SPEC = obj({
    "entrypoint": STR, "runtimeEnvYAML": STR, "jobId": STR, "metadata": STR_MAP,
    "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
    "shutdownAfterJobFinishes": BOOL, "ttlSecondsAfterFinished": INT32,
    "activeDeadlineSeconds": {"type": "integer", "minimum": 1}, "backoffLimit": INT32, "suspend": BOOL,
    "entrypointNumCpus": {"type": "number"}, "entrypointNumGpus": {"type": "number"}, "entrypointResources": STR,
    "clusterSelector": STR_MAP, "rayClusterSpec": RAY_CLUSTER_SPEC, "submitterPodTemplate": POD_TEMPLATE,
    "submitterConfig": obj({"backoffLimit": INT32}),
})
RAY_SERVICE_SPEC = obj({
    "serveConfigV2": STR,
    "rayClusterConfig": RAY_CLUSTER_SPEC,
    "upgradeStrategy": obj({"type": {"enum": ["NewCluster", "None", "NewClusterWithIncrementalUpgrade"]}}),
    "excludeHeadPodFromServeSvc": BOOL,
}, required=("rayClusterConfig",))


def resource(api_version: str, kind: str, spec: dict | None = None, extra: dict | None = None,
             spec_required: bool = True) -> dict:
    props = {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": obj(
        OBJECT_META["properties"], required=("name",))}
    if spec is not None:
        props["spec"] = spec
    props.update(extra or {})
    return obj(props, required=("apiVersion", "kind", "metadata") + (("spec",) if spec and spec_required else ()))


SCHEMAS: dict[tuple[str, str], dict] = {
    ("ray.io/v1", "RayCluster"): resource("ray.io/v1", "RayCluster", RAY_CLUSTER_SPEC),
    ("ray.io/v1", "RayJob"): resource("ray.io/v1", "RayJob", RAY_JOB_SPEC),
    ("ray.io/v1", "RayService"): resource("ray.io/v1", "RayService", RAY_SERVICE_SPEC),
    ("v1", "Namespace"): resource("v1", "Namespace"),
    ("v1", "ConfigMap"): resource("v1", "ConfigMap", extra={"data": STR_MAP}),
    ("v1", "Service"): resource("v1", "Service", SERVICE_SPEC),
    ("v1", "PersistentVolumeClaim"): resource("v1", "PersistentVolumeClaim", PVC_SPEC),
    ("apps/v1", "Deployment"): resource("apps/v1", "Deployment", obj({
        "replicas": NONNEG, "selector": SELECTOR, "template": POD_TEMPLATE,
        "strategy": obj({"type": {"enum": ["RollingUpdate", "Recreate"]}}),
    }, required=("selector", "template"))),
    ("apps/v1", "StatefulSet"): resource("apps/v1", "StatefulSet", obj({
        "serviceName": STR, "replicas": NONNEG, "selector": SELECTOR, "template": POD_TEMPLATE,
        "volumeClaimTemplates": {"type": "array", "items": obj({"metadata": obj({"name": DNS1123_LABEL}),
                                                                  "spec": PVC_SPEC})},
    }, required=("selector", "template"))),
    ("networking.k8s.io/v1", "Ingress"): resource("networking.k8s.io/v1", "Ingress", obj({
        "ingressClassName": STR,
        "tls": {"type": "array", "items": obj({"hosts": STR_LIST, "secretName": STR})},
        "rules": {"type": "array", "items": obj({"host": STR, "http": obj({"paths": {"type": "array", "items": obj({
            "path": STR, "pathType": {"enum": ["Exact", "Prefix", "ImplementationSpecific"]},
            "backend": obj({"service": obj({"name": STR, "port": obj({"number": {"type": "integer"}, "name": STR})},
                                           required=("name", "port"))}),
        }, required=("pathType", "backend"))}}, required=("paths",))})},
    })),
}

KUSTOMIZATION = obj({
    "apiVersion": {"const": "kustomize.config.k8s.io/v1beta1"}, "kind": {"const": "Kustomization"},
    "namespace": DNS1123_LABEL, "resources": STR_LIST,
    "labels": {"type": "array", "items": obj({"pairs": STR_MAP, "includeSelectors": BOOL, "includeTemplates": BOOL})},
    "images": {"type": "array", "items": obj({"name": STR, "newName": STR, "newTag": STR}, required=("name",))},
    "patches": {"type": "array", "items": obj({"path": STR, "target": obj({
        "group": STR, "version": STR, "kind": STR, "name": STR})}, required=("path",))},
}, required=("apiVersion", "kind"))

JSON6902_PATCH = {"type": "array", "minItems": 1, "items": obj({
    "op": {"enum": ["add", "replace", "remove"]}, "path": {"type": "string", "pattern": "^/"}, "value": {},
}, required=("op", "path"))}
