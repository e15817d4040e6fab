"""Many stacks in waves, over Pulumi's Automation API."""
