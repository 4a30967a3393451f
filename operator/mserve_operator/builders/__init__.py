"""Pure builders: a parsed ModelService spec in, a Kubernetes manifest (dict) out.

Every decision about the children (images, resources, GPUs, probes, security, labels,
ownership) lives here, so that it is unit-tested without a cluster.
"""

from mserve_operator.builders.access import build_service_account, build_token_review_binding
from mserve_operator.builders.deployment import build_deployment
from mserve_operator.builders.egress import build_optimizer_egress_policy
from mserve_operator.builders.ingress import build_ingress_policy
from mserve_operator.builders.job import build_job
from mserve_operator.builders.scaling import build_hpa, build_pdb
from mserve_operator.builders.service import build_service, service_url

__all__ = [
    "build_deployment",
    "build_hpa",
    "build_ingress_policy",
    "build_job",
    "build_optimizer_egress_policy",
    "build_pdb",
    "build_service",
    "build_service_account",
    "build_token_review_binding",
    "service_url",
]
