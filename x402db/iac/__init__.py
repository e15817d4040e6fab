"""The Pulumi program's parts: the component, the dynamic resources, stack config, and the SQL
pulumi-postgresql runs for what the program declares."""
