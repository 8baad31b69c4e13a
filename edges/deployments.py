"""What each deployment is wired to at the edges: its canary backend, its inventory, its
predictor, and the fingerprint of the environment it runs in."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from edges.canary import CanaryBackend, NoPredictor, Predictor
from edges.inventory import GpuInventory
from schemas.actuators import ActuatorBounds
from schemas.config import ConfigError, DeploymentSettings, Settings
from schemas.serving import ServingConfig


def environment_fingerprint(gpu: str, total_gib: float, count: int, model: str,
                            cotenants: list[tuple[str, float]]) -> str:
    """GPU, model and co-tenants: a config that failed here is never tried here again.

    Co-tenant sizes are rounded to 0.5 GiB so that small jitter does not make a new
    environment, while a speech service that doubled does.
    """
    parts = [gpu, f"{total_gib:.2f}", str(count), model] + sorted(
        f"{name}:{round(used * 2) / 2:g}" for name, used in cotenants)
    return "env:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class DeploymentEdges:
    name: str
    settings: DeploymentSettings
    bounds: ActuatorBounds
    current: ServingConfig
    backend: CanaryBackend
    inventory: GpuInventory
    predictor: Predictor
    environment: str
    model: str


def from_scenario(name: str, settings: DeploymentSettings, margin_gib: float) -> DeploymentEdges:
    from edges.inventory import ScenarioInventory
    from edges.sim import load_scenario
    from edges.sim_backend import SimCanaryBackend, SimPredictor

    scenario = load_scenario(settings.scenario)
    bounds = settings.bounds() if settings.actuators else scenario.actuators
    current = settings.current_config() if settings.current else scenario.current
    env = environment_fingerprint(scenario.gpu.name, scenario.gpu.total_gib, scenario.gpu.count,
                                  scenario.model.name, [(c.name, c.used_gib) for c in scenario.cotenants])
    return DeploymentEdges(
        name=name, settings=settings, bounds=bounds, current=current, backend=SimCanaryBackend(scenario),
        inventory=ScenarioInventory(scenario), predictor=SimPredictor(scenario, margin_gib),
        environment=env, model=settings.model or scenario.model.name,
    )


def build(settings: Settings) -> dict[str, DeploymentEdges]:
    edges = {}
    for name, deployment in settings.deployments.items():
        if deployment.canary_backend == "sim":
            if not deployment.scenario:
                raise ConfigError(f"deployments.{name}.scenario: required for canary_backend = 'sim'")
            edges[name] = from_scenario(name, deployment, settings.preflight.margin_gib)
        else:
            raise ConfigError(f"deployments.{name}.canary_backend: 'vllm' is not built yet "
                              f"(only 'sim' runs in this version)")
    return edges


__all__ = ["DeploymentEdges", "NoPredictor", "build", "environment_fingerprint", "from_scenario"]
