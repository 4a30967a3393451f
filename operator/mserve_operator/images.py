"""Which runtime images a ModelService may name: the install's allowlist of globs.

The chart's ValidatingAdmissionPolicy refuses other images at admission; this check is the
same rule inside the operator, for a cluster without the policy (or a spec admitted before it).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import ModelServiceSpec


def image_refusal(spec: ModelServiceSpec, settings: OperatorSettings) -> str:
    """Why `spec.serving.image` is refused ('' when it is unset or allowed)."""
    image = spec.serving.image
    allowed = settings.allowed_runtime_images
    if not image or any(fnmatchcase(image, glob) for glob in allowed):
        return ""
    return (
        f"spec.serving.image '{image}' is not an allowed runtime image in this install "
        f"(allowed: {', '.join(allowed)})"
    )
