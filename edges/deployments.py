"""What each deployment is wired to at the edges: an adapter for every port of
handlers.ports (canary backend, inventory, predictor, config file, reloader, alert sinks,
process reaper), and the fingerprint of the environment it runs in. The composition root of
the loop: handlers never import edges; they receive these objects.

Bounds are checked against the config production runs as each deployment is wired (issue
15.6): bounds that do not hold it are a config error naming the deployment, the actuator, the
value and the bounds, and where each came from, never a search in a 12 GB card's defaults for
a deployment they do not fit (schemas/config.py `check_bounds_fit`). A sim deployment's
actuators table overrides its scenario's bounds one actuator at a time; the others keep the
scenario's."""
from __future__ import annotations

from selfheal.edges.alerts import ConfiguredSinks
from selfheal.edges.credentials import CredentialError
from selfheal.edges.host_memory import HostMemoryInventory
from selfheal.edges.inventory import ScenarioInventory
from selfheal.edges.nvml import NvmlInventory
from selfheal.edges.processes import CanaryReaper
from selfheal.edges.reload import ServerReloader
from selfheal.edges.sim import load_scenario
from selfheal.edges.sim_backend import SimCanaryBackend, SimPredictor
from selfheal.edges.vllm_backend import LoadSettings, VllmCanaryBackend
from selfheal.edges.vllm_config import VllmYaml
from selfheal.handlers.models.serving import LoadMemo
from selfheal.handlers.ports import DeploymentEdges, InventoryUnavailable, NoPredictor
from selfheal.schemas.actuators import ActuatorBounds
from selfheal.schemas.config import ConfigError, DeploymentSettings, Settings, check_bounds_fit
from selfheal.schemas.serving import ServingConfig
from selfheal.schemas.fingerprints import parts_fingerprint


def environment_fingerprint(gpu: str, total_gib: float, count: int, model: str,
                            cotenants: list[tuple[str, float]]) -> str:
    """GPU, model and co-tenants: a config that failed here is never tried here again.

    Co-tenant sizes are rounded to 0.5 GiB so that small jitter does not make a new
    environment, while a speech service that doubled does.
    """
    parts = [gpu, f"{total_gib:.2f}", str(count), model] + sorted(
        f"{name}:{round(used * 2) / 2:g}" for name, used in cotenants)
    return parts_fingerprint(*parts, prefix="env:")


def _production_ports(settings: DeploymentSettings) -> dict:
    """The ports that act on production: the YAML, the reload, the alerts."""
    return {"config_file": VllmYaml(), "reloader": ServerReloader(settings),
            "alerts": ConfiguredSinks([a.spec() for a in settings.alerts])}


#: where an actuator's bounds come from when nothing names them
DEFAULT_BOUNDS = "the default bounds, for a 12 GB card"


def check_fit(name: str, settings: DeploymentSettings, bounds: ActuatorBounds, current: ServingConfig,
              scenario: str | None = None) -> None:
    """ConfigError unless `bounds` hold `current`; the message says where each value came from."""
    defaults = ActuatorBounds().numeric()
    bounds_from, current_from = {}, {}
    for actuator, limits in bounds.numeric().items():
        if actuator not in settings.actuators:
            bounds_from[actuator] = (f"scenario {scenario}'s [actuators]" if scenario and limits != defaults[actuator]
                                     else DEFAULT_BOUNDS + ("" if not scenario else f": scenario {scenario} sets none"))
        if actuator not in settings.current:
            current_from[actuator] = (f"scenario {scenario}'s [current]" if scenario and not settings.current
                                      else f"vLLM's default: deployments.{name}.current does not set it")
    check_bounds_fit(name, bounds, current, bounds_from, current_from)


def from_scenario(name: str, settings: DeploymentSettings, margin_gib: float) -> DeploymentEdges:
    scenario = load_scenario(settings.scenario)
    bounds = settings.bounds(scenario.actuators) if settings.actuators else scenario.actuators
    current = settings.current_config() if settings.current else scenario.current
    check_fit(name, settings, bounds, current, settings.scenario)
    env = environment_fingerprint(scenario.gpu.name, scenario.gpu.total_gib, scenario.gpu.count,
                                  scenario.model.name, [(c.name, c.used_gib) for c in scenario.cotenants])
    loads = LoadMemo(scenario)
    return DeploymentEdges(
        name=name, settings=settings, bounds=bounds, current=current, backend=SimCanaryBackend(scenario, loads),
        inventory=ScenarioInventory(scenario), predictor=SimPredictor(scenario, margin_gib, loads),
        environment=env, model=settings.model or scenario.model.name, **_production_ports(settings),
    )


def from_vllm(name: str, settings: DeploymentSettings) -> DeploymentEdges:
    """A real deployment: canaries are real vLLM servers; pre-flight reads NVML or host memory."""
    if not settings.model:
        raise ConfigError(f"deployments.{name}.model: required for canary_backend = 'vllm'")
    if not settings.current:
        raise ConfigError(f"deployments.{name}.current: the serving config production runs is required "
                          "(gpu_memory_utilization, max_model_len, max_num_seqs, max_num_batched_tokens)")
    load = settings.load
    try:   # the command's credentials move to the canary's environment; one that cannot is a config error
        backend = VllmCanaryBackend(
            settings.command, settings.model, health_timeout_s=settings.health_timeout_s, env=settings.env or None,
            load=LoadSettings(requests=load.requests, max_concurrency=load.max_concurrency,
                              prompt_fraction=load.prompt_fraction, max_tokens=load.max_tokens,
                              deadline_s=load.timeout_s, longest_prompt_tokens=load.longest_prompt_tokens))
    except CredentialError as exc:
        raise ConfigError(f"deployments.{name}.command: {exc}") from None
    check_fit(name, settings, settings.bounds(), settings.current_config())
    inventory = HostMemoryInventory() if settings.inventory == "host" else NvmlInventory()
    try:
        devices = inventory.snapshot()
        env = environment_fingerprint(devices[0].name, devices[0].total_bytes / 2**30, len(devices), settings.model,
                                      [(p.name, p.used_bytes / 2**30) for d in devices for p in d.processes
                                       if "vllm" not in p.name.lower()])
    except InventoryUnavailable:
        # pre-flight will refuse every candidate with the reason; the fingerprint only has to be stable
        env = environment_fingerprint("unavailable", 0, 0, settings.model, [])
    return DeploymentEdges(name=name, settings=settings, bounds=settings.bounds(), current=settings.current_config(),
                           backend=backend, inventory=inventory, predictor=NoPredictor(), environment=env,
                           model=settings.model, reaper=CanaryReaper(), **_production_ports(settings))


def build_one(settings: Settings, name: str) -> DeploymentEdges:
    """The wiring of one deployment (a vLLM deployment's reads its GPU inventory)."""
    deployment = settings.deployment(name)
    if deployment.canary_backend == "sim":
        if not deployment.scenario:
            raise ConfigError(f"deployments.{name}.scenario: required for canary_backend = 'sim'")
        return from_scenario(name, deployment, settings.preflight.margin_gib)
    return from_vllm(name, deployment)


def build(settings: Settings) -> dict[str, DeploymentEdges]:
    """Every deployment's wiring: what the loop needs, since it handles them all."""
    return {name: build_one(settings, name) for name in settings.deployments}


__all__ = ["build", "build_one", "environment_fingerprint", "from_scenario", "from_vllm"]
