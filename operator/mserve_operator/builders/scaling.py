"""HorizontalPodAutoscaler and PodDisruptionBudget for the runtime Deployment."""

from __future__ import annotations

from mserve_operator import names
from mserve_operator.builders.pod import Owner, metadata
from mserve_operator.spec import ModelServiceSpec


def build_hpa(spec: ModelServiceSpec, owner: Owner) -> dict | None:
    """None when the spec asks for a fixed replica count."""
    autoscaling = spec.serving.autoscaling
    if autoscaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(owner, owner.name, names.labels(owner.name, names.COMPONENT_RUNTIME)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": autoscaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }


def build_pdb(spec: ModelServiceSpec, owner: Owner) -> dict | None:
    """None for a single replica: a PDB there would only block node drains."""
    if spec.serving.min_replicas < 2:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(owner, owner.name, names.labels(owner.name, names.COMPONENT_RUNTIME)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.selector_labels(owner.name, names.COMPONENT_RUNTIME)},
        },
    }
