"""Where a task's events and the orchestrator's shared state live: in this process (the default), or in Redis
(scale-out mode, `state_url`), so that any instance serves any task."""
