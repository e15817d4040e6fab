"""Pulumi program: config -> one provider -> one component -> exports. Logic lives in x402db."""

import pulumi

from x402db.iac import config
from x402db.iac.component import OpenRouterIntegration, OpenRouterIntegrationArgs, build_provider

try:
    cfg = config.load(pulumi.Config())
except config.ConfigError as e:
    # RunError: Pulumi prints the message alone, without the program's traceback.
    raise pulumi.RunError(str(e)) from None
provider = build_provider("x402-postgres", cfg)
integration = OpenRouterIntegration("openrouter", OpenRouterIntegrationArgs(config=cfg, provider=provider))

pulumi.export("migrations", integration.migration_versions)
pulumi.export("roles", integration.roles)
pulumi.export("host", cfg.host)
pulumi.export("port", cfg.port)
pulumi.export("database", cfg.database)
if cfg.fleet_evidence is not None:
    pulumi.export("fleetEvidence", cfg.fleet_evidence)
