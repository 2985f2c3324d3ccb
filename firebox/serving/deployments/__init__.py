"""On-demand deployments: replicas, routing, autoscaling and their control plane (docs/deployments.md)."""
